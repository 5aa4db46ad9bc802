/** Parses `HOST:PORT`, `[IPv6]:PORT`, `:PORT` or `PORT` for --listen. */
import { NBD_DEFAULT_PORT } from '../nbd/constants.js';
import { UsageError } from './usage-error.js';

export interface TcpAddress {
  host: string;
  port: number;
}

export function parseListenAddress(text: string): TcpAddress {
  let host = '127.0.0.1';
  let portText = String(NBD_DEFAULT_PORT);
  const bracketed = /^\[([^\]]+)\](?::(\d*))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1];
    if (bracketed[2]) portText = bracketed[2];
  } else if (/^\d+$/.test(text)) {
    portText = text;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) host = text;
    else {
      if (text.indexOf(':') !== colon) throw new UsageError(`--listen ${text}: write IPv6 addresses in brackets, e.g. [::1]:10809`);
      if (colon > 0) host = text.slice(0, colon);
      if (colon < text.length - 1) portText = text.slice(colon + 1);
    }
  }
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--listen ${text}: "${portText}" is not a port number`);
  return { host, port };
}

/** How a TCP address is written in an nbd:// URI. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
