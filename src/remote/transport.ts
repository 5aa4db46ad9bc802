/**
 * The one seam between the remote code and the network: send a GET or HEAD, get a status,
 * headers and a body read one of three ways. The real one is undici (undici-transport.ts);
 * tests of the request logic give a scripted one.
 */

export interface HttpRequest {
  readonly url: URL;
  readonly method: 'GET' | 'HEAD';
  readonly headers: Readonly<Record<string, string>>;
}

export interface HttpResponse {
  readonly status: number;
  /** Lower-case names; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string | undefined>>;
  /** Reads the whole body into `into`; rejects (and drops the connection) if it is longer or shorter. */
  readExactly(into: Buffer): Promise<void>;
  /**
   * Reads the whole body as the pieces it arrived in (views of what the socket read, no copy);
   * rejects (and drops the connection) if it is longer or shorter than `length`. Optional: a
   * transport without it is read with `readExactly`.
   */
  readPieces?(length: number): Promise<Buffer[]>;
  /** Reads at most `limit` bytes of the body as text (for error bodies), then drops the rest. */
  text(limit: number): Promise<string>;
  /** Drops the body unread; the connection is closed rather than drained when that is cheaper. */
  discard(): void;
}

export type Transport = (request: HttpRequest) => Promise<HttpResponse>;

/** A body that did not have the length it promised (the connection broke, or a proxy cut it). */
export class BodyLengthError extends Error {
  override name = 'BodyLengthError';
}
