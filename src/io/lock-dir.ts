/**
 * Portable image locks: a directory beside the image, `.NAME.stackbd-locks/`, holding one small
 * file per holder (`w-…` for a writer, `r-…` for a reader) that says who holds it: host, pid,
 * boot id and the process's start time. It works without the native addon (macOS, a registry
 * install with no compiler, STACKBD_NO_NATIVE=1) and across installs of stackbd on one host;
 * flock, where the addon has it, is kept as well (the kernel drops it when a process dies).
 *
 * - A writer adds its entry, then looks: any other live entry (reader or writer, this process
 *   included) means the image is in use, and the writer takes its entry back and is refused.
 * - A reader adds its entry, then looks: a live writer means the reader goes on without a lock
 *   (inspecting an image that is being served is fine), taking its entry back.
 * Two racing writers may both be refused, never both admitted: each adds before it looks.
 * - Stale entries (a process that died: its pid is gone, its start time or the boot id changed)
 *   are removed by whoever finds them. An entry from another host cannot be checked and counts
 *   as live; the message names the file to remove once that host no longer uses the image.
 * - Releasing removes the entry and, when it was the last, the directory.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export type LockMode = 'shared' | 'exclusive';

/** Who holds an entry. */
export interface LockHolder {
  host: string;
  pid: number;
  /** Linux boot id (empty elsewhere): a reboot makes every entry of this host stale. */
  boot: string;
  /** The process's start time in clock ticks since boot (Linux; empty elsewhere): a reused pid differs. */
  started: string;
  mode: LockMode;
}

/** The outcome of trying to lock. */
export type LockAttempt =
  | { kind: 'locked'; release: () => Promise<void> }
  /** A reader found a writer: it goes on without a lock. */
  | { kind: 'unlocked'; holder: LockHolder }
  /** A writer found other holders. */
  | { kind: 'busy'; holders: LockHolder[]; entries: string[] }
  /** The directory beside the image cannot be written (read-only media, permissions). */
  | { kind: 'unavailable'; reason: string };

const ATTEMPTS = 4;
/** Entries being written; one left by a crash is removed once it is this old. */
const TEMP_PREFIX = 'tmp-';
const TEMP_STALE_MS = 60_000;

export function lockDirOf(image: string): string {
  return path.join(path.dirname(image), `.${path.basename(image)}.stackbd-locks`);
}

export function currentHolder(mode: LockMode, pid = process.pid): LockHolder {
  return { host: os.hostname(), pid, boot: bootId(), started: startTimeOf(pid) ?? '', mode };
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

/** Field 22 of /proc/PID/stat (after the command name, which may hold spaces and parentheses). */
function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** False only when the holder is certainly gone. */
export function isLive(holder: LockHolder): boolean {
  const me = currentHolder(holder.mode);
  if (holder.host !== me.host) return true;
  if (holder.boot && me.boot && holder.boot !== me.boot) return false;
  if (!processExists(holder.pid)) return false;
  const started = startTimeOf(holder.pid);
  return !(holder.started && started !== null && started !== holder.started);
}

function parseHolder(text: string): LockHolder | null {
  try {
    const v = JSON.parse(text) as Partial<LockHolder>;
    if (typeof v.host !== 'string' || typeof v.pid !== 'number' || (v.mode !== 'shared' && v.mode !== 'exclusive')) return null;
    return { host: v.host, pid: v.pid, boot: String(v.boot ?? ''), started: String(v.started ?? ''), mode: v.mode };
  } catch {
    return null;
  }
}

/** Tries once to lock `image` in `mode`, never waiting for other holders. */
export async function tryLockDir(image: string, mode: LockMode): Promise<LockAttempt> {
  const dir = lockDirOf(image);
  const me = currentHolder(mode);
  const name = `${mode === 'exclusive' ? 'w' : 'r'}-${me.pid}-${randomBytes(6).toString('hex')}`;
  const entry = path.join(dir, name);
  let created = false;
  for (let attempt = 0; attempt < ATTEMPTS && !created; attempt++) {
    // Written under a temporary name and renamed, so that no one ever reads a half-written entry.
    const temp = path.join(dir, `${TEMP_PREFIX}${name}`);
    try {
      await fs.mkdir(dir, { recursive: true });
      await fs.writeFile(temp, JSON.stringify(me), { flag: 'wx', mode: 0o644 });
      await fs.rename(temp, entry);
      created = true;
    } catch (err) {
      await fs.rm(temp, { force: true }).catch(() => undefined);
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: another holder removed the directory between our mkdir and our write.
      if (code !== 'ENOENT') return { kind: 'unavailable', reason: `${dir}: ${code ?? String(err)}` };
    }
  }
  if (!created) return { kind: 'unavailable', reason: `${dir}: it kept disappearing` };
  const release = (): Promise<void> => removeEntry(dir, entry);
  const others = await liveEntries(dir, name);
  if (mode === 'exclusive' && others.length > 0) {
    await release();
    return { kind: 'busy', holders: others.map((o) => o.holder), entries: others.map((o) => path.join(dir, o.name)) };
  }
  const writer = others.find((o) => o.holder.mode === 'exclusive');
  if (writer) {
    await release();
    return { kind: 'unlocked', holder: writer.holder };
  }
  return { kind: 'locked', release };
}

/** The other entries of live holders; stale ones are removed on the way. */
async function liveEntries(dir: string, own: string): Promise<Array<{ name: string; holder: LockHolder }>> {
  const live: Array<{ name: string; holder: LockHolder }> = [];
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    if (name === own) continue;
    const file = path.join(dir, name);
    if (name.startsWith(TEMP_PREFIX)) {
      const st = await fs.stat(file).catch(() => null);
      if (st && Date.now() - st.mtimeMs > TEMP_STALE_MS) await fs.rm(file, { force: true });
      continue;
    }
    const text = await fs.readFile(file, 'utf8').catch(() => null);
    // Gone meanwhile: released.
    if (text === null) continue;
    const holder = parseHolder(text);
    if (holder && isLive(holder)) live.push({ name, holder });
    else await fs.rm(file, { force: true });
  }
  return live;
}

async function removeEntry(dir: string, entry: string): Promise<void> {
  await fs.rm(entry, { force: true });
  // The last one out removes the directory; another holder's entry keeps it.
  await fs.rmdir(dir).catch(() => undefined);
}

/** One line per holder, for messages. */
export function describeHolders(holders: readonly LockHolder[]): string {
  return holders.map((h) => `${h.mode === 'exclusive' ? 'writer' : 'reader'} pid ${h.pid} on ${h.host}`).join(', ');
}
