/** `--allow CIDR` (repeatable): the client addresses the server accepts over TCP. */
import net from 'node:net';
import { UsageError } from './usage-error.js';

export function parseAllowList(entries: readonly string[]): net.BlockList | null {
  if (entries.length === 0) return null;
  const list = new net.BlockList();
  for (const entry of entries) {
    const [address, prefixText] = entry.split('/');
    const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : null;
    if (!family) throw new UsageError(`--allow ${entry}: "${address}" is not an IP address`);
    if (prefixText === undefined) {
      list.addAddress(address, family);
      continue;
    }
    const prefix = Number(prefixText);
    const max = family === 'ipv4' ? 32 : 128;
    if (!/^\d+$/.test(prefixText) || prefix > max) throw new UsageError(`--allow ${entry}: prefix length must be 0 to ${max}`);
    list.addSubnet(address, prefix, family);
  }
  return list;
}
