/**
 * The client side of NBD's STARTTLS: after the server's ACK, the plain socket is wrapped in TLS
 * (at least TLS 1.2) and everything after, options included, goes through it. Two kinds of
 * credentials, as libnbd and QEMU use them: X.509 (the server's certificate checked against a CA
 * and its name, an optional client certificate) or a pre-shared key (TLS 1.2 PSK suites, no
 * certificates).
 */
import type net from 'node:net';
import tls from 'node:tls';
import { PSK_CIPHERS } from './psk-file.js';

export interface ClientTlsOptions {
  /** CA certificates (PEM) the server's certificate must chain to; Node's bundled CAs when absent. */
  ca?: Buffer;
  /** A client certificate and its key (PEM), for servers that ask for one. */
  cert?: Buffer;
  key?: Buffer;
  /** A pre-shared key instead of certificates. */
  psk?: { identity: string; key: Buffer };
  /** The name the server's certificate must carry (default: the host connected to, or localhost over a unix socket). */
  servername?: string;
}

/** Starts the TLS handshake on `socket`; the caller listens to the returned socket and waits for 'secureConnect'. */
export function wrapInTls(socket: net.Socket, options: ClientTlsOptions, servername: string): tls.TLSSocket {
  const psk = options.psk;
  if (psk) {
    return tls.connect({
      socket,
      ciphers: PSK_CIPHERS,
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      pskCallback: () => ({ psk: psk.key, identity: psk.identity }),
      // PSK suites carry no certificate: the shared key is what authenticates the server.
      checkServerIdentity: () => undefined,
    });
  }
  return tls.connect({
    socket,
    minVersion: 'TLSv1.2',
    servername: /^[\d.:]+$/.test(servername) ? undefined : servername,
    checkServerIdentity: (_host, cert) => tls.checkServerIdentity(servername, cert),
    ...(options.ca ? { ca: options.ca } : {}),
    ...(options.cert && options.key ? { cert: options.cert, key: options.key } : {}),
  });
}
