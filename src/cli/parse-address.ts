/**
 * Parses `HOST:PORT`, `[IPv6]:PORT`, `:PORT` or `PORT` for --listen (a missing host is
 * loopback). Listening on every interface must be written out, `0.0.0.0:PORT` or `[::]:PORT`:
 * an empty address, an empty host or `*` is refused rather than read as "everywhere".
 */
import { NBD_DEFAULT_PORT } from '../nbd/constants.js';
import { UsageError } from './usage-error.js';

export interface TcpAddress {
  host: string;
  port: number;
}

const WILDCARDS = new Set(['0.0.0.0', '::', '0:0:0:0:0:0:0:0']);

export function parseListenAddress(text: string): TcpAddress {
  if (text.trim() === '') throw new UsageError('--listen needs an address: HOST:PORT, e.g. 127.0.0.1:10809 (or 0.0.0.0:10809 for every interface)');
  let host = '127.0.0.1';
  let portGiven = false;
  let portText = String(NBD_DEFAULT_PORT);
  const bracketed = /^\[([^\]]+)\](?::(\d*))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1];
    if (bracketed[2]) {
      portText = bracketed[2];
      portGiven = true;
    }
  } else if (/^\d+$/.test(text)) {
    portText = text;
    portGiven = true;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) host = text;
    else {
      if (text.indexOf(':') !== colon) throw new UsageError(`--listen ${text}: write IPv6 addresses in brackets, e.g. [::1]:10809`);
      if (colon > 0) host = text.slice(0, colon);
      if (colon < text.length - 1) {
        portText = text.slice(colon + 1);
        portGiven = true;
      }
    }
  }
  if (host.trim() === '' || host === '*' || /[[\]]/.test(host)) {
    throw new UsageError(`--listen ${text}: no host; write 0.0.0.0:PORT or [::]:PORT to listen on every interface, or a host such as 127.0.0.1`);
  }
  if (WILDCARDS.has(host) && !portGiven) {
    throw new UsageError(`--listen ${text}: every interface needs the port written out too, e.g. ${formatHostPort(host, NBD_DEFAULT_PORT)}`);
  }
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--listen ${text}: "${portText}" is not a port number`);
  return { host, port };
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host) || /^::ffff:127\./i.test(host);
}

/** How a TCP address is written in an nbd:// URI. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
