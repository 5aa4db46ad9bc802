/**
 * What an NBD client call can fail with. Every failure is one of these (a socket error is
 * wrapped, never passed on bare), so a caller can tell a refusal by the server from a broken
 * server from a lost connection:
 * - NbdRequestError: the server answered the request with an error number;
 * - NbdOptionError: the server refused an option during negotiation;
 * - NbdProtocolError: the server broke the protocol, in the reply to one request (that request
 *   fails, the connection goes on) or during negotiation;
 * - NbdConnectionError: the connection is gone (closed, reset, timed out, or closed by us
 *   because the byte stream could no longer be trusted); every request in flight fails with it.
 */

/** Base class of every error the NBD client raises. */
export class NbdClientError extends Error {
  override name = 'NbdClientError';
}

/** A request the server answered with an error. */
export class NbdRequestError extends NbdClientError {
  override name = 'NbdRequestError';
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

/** The server refused an option during negotiation. */
export class NbdOptionError extends NbdClientError {
  override name = 'NbdOptionError';
  constructor(
    readonly option: number,
    readonly replyType: number,
    message: string,
  ) {
    super(message);
  }
}

/** The server sent something the protocol does not allow. */
export class NbdProtocolError extends NbdClientError {
  override name = 'NbdProtocolError';
}

/** The connection is closed; `reason` says why, when something other than the server's hang-up closed it. */
export class NbdConnectionError extends NbdClientError {
  override name = 'NbdConnectionError';
  constructor(
    message: string,
    readonly reason: Error | null = null,
  ) {
    super(reason ? `connection closed: ${message}` : message);
  }
}
