/**
 * NBD URIs as QEMU, libnbd and Apple's client write them:
 * `nbd://host[:port]/export`, `nbd+unix:///export?socket=/path`, and the `nbds` (TLS) forms,
 * which take libnbd's TLS query parameters: `tls-certificates=DIR` (ca-cert.pem, and
 * client-cert.pem with client-key.pem, inside), `tls-psk-file=FILE` with `tls-username=NAME`
 * (the PSK identity), and `tls-hostname=NAME` (the name the server's certificate must carry).
 * The export name is the path without its leading slash.
 */
import { NBD_DEFAULT_PORT } from './constants.js';

/** TLS settings a URI carries; only the fields present in the URI are set. */
export interface NbdTlsParams {
  tlsCertificates?: string;
  tlsPskFile?: string;
  tlsUsername?: string;
  tlsHostname?: string;
}

export type NbdTarget = (
  | { kind: 'tcp'; host: string; port: number; exportName: string; tls: boolean }
  | { kind: 'unix'; path: string; exportName: string; tls: boolean }
) &
  NbdTlsParams;

const TLS_PARAMS: ReadonlyArray<[string, keyof NbdTlsParams]> = [
  ['tls-certificates', 'tlsCertificates'],
  ['tls-psk-file', 'tlsPskFile'],
  ['tls-username', 'tlsUsername'],
  ['tls-hostname', 'tlsHostname'],
];

function tlsParams(text: string, url: URL, tls: boolean): NbdTlsParams {
  const params: NbdTlsParams = {};
  for (const [name, field] of TLS_PARAMS) {
    const value = url.searchParams.get(name);
    if (value === null) continue;
    if (!tls) throw new Error(`${text}: ${name} needs a TLS URI (nbds:// or nbds+unix://)`);
    params[field] = value;
  }
  if (params.tlsCertificates !== undefined && params.tlsPskFile !== undefined) throw new Error(`${text}: give tls-certificates or tls-psk-file, not both`);
  return params;
}

export function parseNbdUri(text: string): NbdTarget {
  const url = new URL(text);
  const scheme = url.protocol.replace(/:$/, '');
  const tls = scheme.startsWith('nbds');
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (scheme === 'nbd' || scheme === 'nbds') {
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (!host) throw new Error(`${text}: no host`);
    return { kind: 'tcp', host, port: url.port ? Number(url.port) : NBD_DEFAULT_PORT, exportName, tls, ...tlsParams(text, url, tls) };
  }
  if (scheme === 'nbd+unix' || scheme === 'nbds+unix') {
    const path = url.searchParams.get('socket');
    if (!path) throw new Error(`${text}: a unix URI needs ?socket=PATH`);
    return { kind: 'unix', path, exportName, tls, ...tlsParams(text, url, tls) };
  }
  throw new Error(`${text}: not an NBD URI (nbd://, nbd+unix://, nbds://, nbds+unix://)`);
}
