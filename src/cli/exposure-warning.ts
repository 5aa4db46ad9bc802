/** The warning for writable disks reachable from other machines in plain text. */
import type { Logger } from 'pino';
import type { Export } from '../server/export.js';
import { formatHostPort, isLoopback, type TcpAddress } from './parse-address.js';

export function warnIfExposed(log: Logger, tcp: readonly TcpAddress[], tlsRequired: boolean, exports: readonly Export[]): void {
  if (tlsRequired) return;
  const open = tcp.filter((a) => !isLoopback(a.host));
  const writable = exports.filter((e) => !e.readOnly).map((e) => e.name);
  if (open.length === 0 || writable.length === 0) return;
  log.warn(
    { addresses: open.map((a) => formatHostPort(a.host, a.port)), exports: writable },
    'writable exports are served on a non-loopback address without TLS: anyone who can reach it can read and write those disks (use --tls require, --allow, or a loopback address)',
  );
}
