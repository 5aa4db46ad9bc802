/**
 * Which metadata contexts a query names. `base:allocation` and QEMU's `qemu:allocation-depth`
 * and `qemu:dirty-bitmap:NAME` are supported; queries in other namespaces are ignored, as the
 * protocol requires. Listing accepts namespace wildcards (`base:`, `qemu:`,
 * `qemu:dirty-bitmap:`); selecting takes exact names only.
 */
import { MetaContext } from '../nbd/constants.js';

export type ContextKind = 'allocation' | 'depth' | 'dirty';

export function contextKind(name: string): ContextKind | null {
  if (name === MetaContext.BASE_ALLOCATION) return 'allocation';
  if (name === MetaContext.ALLOCATION_DEPTH) return 'depth';
  if (name.startsWith(MetaContext.DIRTY_BITMAP_PREFIX)) return 'dirty';
  return null;
}

/** Stable ids, so a context has the same id on every connection (clients must not rely on it). */
export const CONTEXT_IDS: Readonly<Record<ContextKind, number>> = { allocation: 1, depth: 2, dirty: 3 };

export function matchContexts(available: readonly string[], queries: readonly string[], listing: boolean): string[] {
  if (queries.length === 0) return listing ? [...available] : [];
  const chosen = new Set<string>();
  for (const query of queries) {
    for (const name of available) {
      if (name === query) chosen.add(name);
      else if (listing && query.endsWith(':') && name.startsWith(query)) chosen.add(name);
    }
  }
  return available.filter((name) => chosen.has(name));
}
