/**
 * Seeded mutations of a server script: bit flips, byte and field overwrites with interesting
 * values, truncation, insertion, dropped, repeated and swapped messages. Each mutation says
 * whether it touched payload bytes (data, extents, names, sizes), which no protocol check can
 * catch, or only framing: after a single framing-only mutation, a call that succeeds must
 * return exactly what the valid conversation returns.
 */
import type { Step } from './scripted-server.js';

type Send = Extract<Step, { kind: 'send' }>;

export interface Mutation {
  what: string;
  touchesPayload: boolean;
}

const INTERESTING_U32 = [0, 1, 2, 7, 8, 9, 12, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0x10000, 0x2000000, 4096];

function inPayload(step: Send, at: number, end = at + 1): boolean {
  return (step.dataRanges ?? []).some(([s, e]) => at < e && s < end);
}

function isOptional(step: Send): boolean {
  return step.optional === true;
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

function sendIndexes(steps: readonly Step[]): number[] {
  return steps.flatMap((s, i) => (s.kind === 'send' && s.bytes.length > 0 ? [i] : []));
}

/** Applies one random mutation to `steps` (in place) and describes it. */
export function mutateOnce(steps: Step[], random: () => number): Mutation {
  const sends = sendIndexes(steps);
  if (sends.length === 0) return { what: 'nothing to mutate', touchesPayload: false };
  const index = pick(random, sends);
  const step = steps[index] as Send;
  const bytes = Buffer.from(step.bytes);
  const at = Math.floor(random() * bytes.length);
  const replace = (b: Buffer, ranges = step.dataRanges): void => {
    steps[index] = { kind: 'send', bytes: b, dataRanges: ranges };
  };
  switch (Math.floor(random() * 9)) {
    case 0: {
      bytes[at] ^= 1 << Math.floor(random() * 8);
      replace(bytes);
      return { what: `flip a bit of byte ${at} of message ${index}`, touchesPayload: inPayload(step, at) };
    }
    case 1: {
      bytes[at] = Math.floor(random() * 256);
      replace(bytes);
      return { what: `overwrite byte ${at} of message ${index}`, touchesPayload: inPayload(step, at) };
    }
    case 2: {
      const pos = Math.min(at, Math.max(0, bytes.length - 4)) & ~1;
      if (bytes.length < 4) return mutateOnce(steps, random);
      const value = pick(random, INTERESTING_U32);
      bytes.writeUInt32BE(value >>> 0, pos);
      replace(bytes);
      return { what: `set u32 at ${pos} of message ${index} to ${value}`, touchesPayload: inPayload(step, pos, pos + 4) };
    }
    case 3: {
      replace(bytes.subarray(0, at));
      return { what: `cut message ${index} at ${at}`, touchesPayload: inPayload(step, at, bytes.length) };
    }
    case 4: {
      const extra = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 16) }, () => Math.floor(random() * 256)));
      replace(Buffer.concat([bytes.subarray(0, at), extra, bytes.subarray(at)]), []);
      return { what: `insert ${extra.length} bytes at ${at} of message ${index}`, touchesPayload: inPayload(step, at, bytes.length) };
    }
    // Whole messages: a missing, repeated or reordered optional message (an export in a LIST,
    // say) can make a conversation as valid as the original, so only the others are judged.
    case 5:
      steps.splice(index, 1);
      return { what: `drop message ${index}`, touchesPayload: isOptional(step) };
    case 6:
      steps.splice(index, 0, { ...step });
      return { what: `repeat message ${index}`, touchesPayload: isOptional(step) };
    case 7: {
      const other = pick(random, sends);
      steps[index] = steps[other];
      steps[other] = step;
      return { what: `swap messages ${index} and ${other}`, touchesPayload: isOptional(step) || isOptional(steps[index] as Send) };
    }
    default: {
      // A length or magic field set to the largest value its 8-byte field can hold.
      if (bytes.length < 8) return mutateOnce(steps, random);
      const pos = Math.floor(random() * (bytes.length - 7));
      bytes.fill(0xff, pos, pos + 8);
      replace(bytes);
      return { what: `fill 8 bytes at ${pos} of message ${index} with 0xff`, touchesPayload: inPayload(step, pos, pos + 8) };
    }
  }
}
