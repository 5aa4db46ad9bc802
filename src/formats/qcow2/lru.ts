/**
 * A least-recently-used cache bounded by the total weight (bytes) of what it holds, for the
 * qcow2 L2 tables and decompressed clusters.
 *
 * - Stores: values by key in use order (a Map keeps insertion order; a hit re-inserts).
 * - Invariant: the total weight stays at or below `capacity`, except that the newest entry is
 *   always kept even when it alone weighs more (a 2 MiB L2 table with a 1 MiB budget must still
 *   be usable once).
 * - Loads of a missing key are shared: callers that miss while a load runs wait for that load
 *   instead of reading the same bytes again.
 */
export class LruCache<K, V> {
  private readonly entries = new Map<K, { value: V; weight: number }>();
  private readonly loading = new Map<K, Promise<V>>();
  private total = 0;
  private newest: K | undefined;

  constructor(
    readonly capacity: number,
    private readonly weigh: (value: V) => number,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get weight(): number {
    return this.total;
  }

  get(key: K): V | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    // Re-inserting costs two map operations on every hit; the newest entry needs none.
    if (key !== this.newest) {
      this.entries.delete(key);
      this.entries.set(key, entry);
      this.newest = key;
    }
    return entry.value;
  }

  set(key: K, value: V): void {
    const old = this.entries.get(key);
    if (old) {
      this.total -= old.weight;
      this.entries.delete(key);
    }
    const weight = this.weigh(value);
    this.entries.set(key, { value, weight });
    this.newest = key;
    this.total += weight;
    for (const [k, e] of this.entries) {
      if (this.total <= this.capacity || k === key) break;
      this.entries.delete(k);
      this.total -= e.weight;
    }
  }

  /** The cached value, or the result of `load` (stored unless it fails), shared by concurrent callers. */
  obtain(key: K, load: () => Promise<V>): Promise<V> {
    const hit = this.get(key);
    if (hit !== undefined) return Promise.resolve(hit);
    const pending = this.loading.get(key);
    if (pending) return pending;
    const started = load().then(
      (value) => {
        this.loading.delete(key);
        this.set(key, value);
        return value;
      },
      (err: unknown) => {
        this.loading.delete(key);
        throw err;
      },
    );
    this.loading.set(key, started);
    return started;
  }
}
