/** Whether two paths name one file (links and `./a` vs `a` included), for refusing an output that is also an input. */
import fs from 'node:fs/promises';

/** True when both exist and are the same file; false when either does not exist. */
export async function isSameFile(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([fs.stat(a).catch(() => null), fs.stat(b).catch(() => null)]);
  return !!sa && !!sb && sa.dev === sb.dev && sa.ino === sb.ino;
}

/** The first of `candidates` that is the same file as `path`, if any. */
export async function findSameFile(path: string, candidates: readonly string[]): Promise<string | undefined> {
  for (const c of candidates) if (await isSameFile(path, c)) return c;
  return undefined;
}
