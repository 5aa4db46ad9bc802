/**
 * NBD URIs as QEMU, libnbd and Apple's client write them:
 * `nbd://host[:port]/export`, `nbd+unix:///export?socket=/path`, and the `nbds` (TLS) forms.
 * The export name is the path without its leading slash.
 */
import { NBD_DEFAULT_PORT } from './constants.js';

export type NbdTarget =
  | { kind: 'tcp'; host: string; port: number; exportName: string; tls: boolean }
  | { kind: 'unix'; path: string; exportName: string; tls: boolean };

export function parseNbdUri(text: string): NbdTarget {
  const url = new URL(text);
  const scheme = url.protocol.replace(/:$/, '');
  const tls = scheme.startsWith('nbds');
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (scheme === 'nbd' || scheme === 'nbds') {
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (!host) throw new Error(`${text}: no host`);
    return { kind: 'tcp', host, port: url.port ? Number(url.port) : NBD_DEFAULT_PORT, exportName, tls };
  }
  if (scheme === 'nbd+unix' || scheme === 'nbds+unix') {
    const path = url.searchParams.get('socket');
    if (!path) throw new Error(`${text}: a unix URI needs ?socket=PATH`);
    return { kind: 'unix', path, exportName, tls };
  }
  throw new Error(`${text}: not an NBD URI (nbd://, nbd+unix://, nbds://, nbds+unix://)`);
}
