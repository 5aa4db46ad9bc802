/**
 * Test-only: byte arrays that report out-of-bounds element access instead of quietly reading
 * `undefined` or dropping the write, as plain typed arrays do. Methods (subarray, set,
 * copyWithin, ...) run on the real array, which bounds them itself.
 */
export class OutOfBoundsAccess extends Error {
  override name = 'OutOfBoundsAccess';
}

function indexOf(prop: string | symbol): number | null {
  if (typeof prop !== 'string') return null;
  const n = Number(prop);
  return String(n) === prop || prop === '-0' ? n : null;
}

function inBounds(index: number, length: number): boolean {
  return Number.isInteger(index) && index >= 0 && index < length;
}

export function guardedBytes(target: Uint8Array, what: string): Uint8Array {
  return new Proxy(target, {
    get(t, prop) {
      const index = indexOf(prop);
      if (index !== null) {
        if (!inBounds(index, t.length)) throw new OutOfBoundsAccess(`${what}: read at ${String(prop)} of ${t.length}`);
        return t[index];
      }
      const value: unknown = Reflect.get(t, prop);
      return typeof value === 'function' ? value.bind(t) : value;
    },
    set(t, prop, value: number) {
      const index = indexOf(prop);
      if (index === null || !inBounds(index, t.length)) throw new OutOfBoundsAccess(`${what}: write at ${String(prop)} of ${t.length}`);
      t[index] = value;
      return true;
    },
  });
}
