/**
 * Valid NBD conversations, server side, as scripts for the scripted server: the negotiation a
 * given client configuration goes through, then the replies to a fixed set of requests (chunks
 * of different requests interleaved in a random order, as servers may send them). Each carries
 * what the client must get back, so a mutated copy can be judged.
 */
import type { BlockStatusExtent, ClientOptions } from '../../../src/nbd/client.js';
import {
  chunkHeaderSize,
  encodeSimpleReply,
  writeChunkHeader,
  writeSimpleReplyHeader,
  type ReplyMode,
} from '../../../src/nbd/codec.js';
import { Info, Option, OptionReply, ReplyFlag, ReplyType, Size, TransmissionFlag } from '../../../src/nbd/constants.js';
import {
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeMetaContextReply,
  encodeMetaContextRequest,
  encodeOptionReply,
  encodeServerReply,
} from '../../../src/nbd/handshake.js';
import type { Step } from './scripted-server.js';

export const EXPORT_SIZE = 1024 * 1024;
export const EXPORT_FLAGS = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_DF | TransmissionFlag.CAN_MULTI_CONN;
export const CONTEXT_ID = 7;

/** The export's bytes: a pattern that differs from sector to sector. */
export function byteAt(offset: number): number {
  return (offset * 7 + (offset >> 9) + 1) & 0xff;
}

export function pattern(offset: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) buf[i] = byteAt(offset + i);
  return buf;
}

export type ClientCall =
  | { kind: 'read'; offset: number; length: number }
  | { kind: 'status'; offset: number; length: number }
  | { kind: 'write'; offset: number; length: number }
  | { kind: 'flush' };

export interface Conversation {
  name: string;
  /** LIST instead of connecting to an export. */
  list: boolean;
  options: ClientOptions;
  steps: Step[];
  calls: ClientCall[];
  /** Per call: the data a read returns, the base:allocation extents a status returns, null otherwise. */
  expected: Array<Buffer | BlockStatusExtent[] | null>;
  exportNames: string[];
}

export const send = (bytes: Buffer, dataRanges: Array<[number, number]> = []): Step => ({ kind: 'send', bytes, dataRanges });
export const awaitBytes = (bytes: number): Step => ({ kind: 'expect', bytes });

export function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0), dataFrom: number | null = null): Step {
  const bytes = encodeOptionReply(option, type, data);
  const optional = type === OptionReply.SERVER || type === OptionReply.INFO;
  return { kind: 'send', bytes, dataRanges: dataFrom === null ? [] : [[Size.OPTION_REPLY_HEADER + dataFrom, bytes.length]], optional };
}

/** One chunk; payload bytes from `dataFrom` on are payload rather than framing. */
export function chunk(mode: ReplyMode, cookie: bigint, requestOffset: number, type: number, done: boolean, payload: Buffer, dataFrom: number | null): Step {
  const head = chunkHeaderSize(mode);
  const bytes = Buffer.alloc(head + payload.length);
  writeChunkHeader(bytes, 0, mode, { flags: done ? ReplyFlag.DONE : 0, type, cookie, requestOffset, length: payload.length });
  payload.copy(bytes, head);
  return send(bytes, dataFrom === null ? [] : [[head + dataFrom, bytes.length]]);
}

function u64(value: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(value));
  return b;
}

export function dataChunk(mode: ReplyMode, cookie: bigint, requestOffset: number, offset: number, length: number, done: boolean): Step {
  return chunk(mode, cookie, requestOffset, ReplyType.OFFSET_DATA, done, Buffer.concat([u64(offset), pattern(offset, length)]), 8);
}

export function holeChunk(mode: ReplyMode, cookie: bigint, requestOffset: number, offset: number, length: number, done: boolean): Step {
  const payload = Buffer.alloc(12);
  payload.writeBigUInt64BE(BigInt(offset));
  payload.writeUInt32BE(length, 8);
  return chunk(mode, cookie, requestOffset, ReplyType.OFFSET_HOLE, done, payload, null);
}

export function statusChunk(mode: ReplyMode, cookie: bigint, requestOffset: number, extents: BlockStatusExtent[], done: boolean): Step {
  const wide = mode === 'extended';
  const payload = Buffer.alloc((wide ? 8 : 4) + extents.length * (wide ? 16 : 8));
  payload.writeUInt32BE(CONTEXT_ID, 0);
  if (wide) payload.writeUInt32BE(extents.length, 4);
  extents.forEach((e, i) => {
    if (wide) {
      payload.writeBigUInt64BE(BigInt(e.length), 8 + i * 16);
      payload.writeBigUInt64BE(BigInt(e.flags), 16 + i * 16);
    } else {
      payload.writeUInt32BE(e.length, 4 + i * 8);
      payload.writeUInt32BE(e.flags, 8 + i * 8);
    }
  });
  return chunk(mode, cookie, requestOffset, wide ? ReplyType.BLOCK_STATUS_EXT : ReplyType.BLOCK_STATUS, done, payload, wide ? 8 : 4);
}

export function simpleReadReply(cookie: bigint, offset: number, length: number): Step {
  const bytes = Buffer.alloc(Size.SIMPLE_REPLY + length);
  writeSimpleReplyHeader(bytes, 0, 0, cookie);
  pattern(offset, length).copy(bytes, Size.SIMPLE_REPLY);
  return send(bytes, [[Size.SIMPLE_REPLY, bytes.length]]);
}

/** Interleaves the replies of several requests at random, keeping each request's own chunk order. */
function interleave(replies: Step[][], random: () => number): Step[] {
  const queues = replies.map((r) => [...r]);
  const out: Step[] = [];
  for (;;) {
    const live = queues.filter((q) => q.length > 0);
    if (live.length === 0) return out;
    const q = live[Math.floor(random() * live.length)];
    out.push(q.shift()!);
    if (random() < 0.3) out.push({ kind: 'pause' });
  }
}

const STATUS_EXTENTS: BlockStatusExtent[] = [
  { length: 4096, flags: 0 },
  { length: 61440, flags: 3 },
  { length: 65536, flags: 0 },
];

const CALLS: ClientCall[] = [
  { kind: 'read', offset: 0, length: 4096 },
  { kind: 'read', offset: 65536, length: 8192 },
  { kind: 'status', offset: 0, length: 131072 },
  { kind: 'write', offset: 8192, length: 512 },
  { kind: 'flush' },
];

function expectedOf(calls: ClientCall[], withHole: boolean, mode: ReplyMode): Array<Buffer | BlockStatusExtent[] | null> {
  return calls.map((c) => {
    if (c.kind === 'read') {
      const data = pattern(c.offset, c.length);
      if (withHole && c.offset === 0) data.fill(0, 1024, 2048);
      return data;
    }
    if (c.kind === 'status') return mode === 'simple' ? null : STATUS_EXTENTS;
    return null;
  });
}

/** Bytes the client sends for the calls, in order. */
function requestBytes(calls: ClientCall[], mode: ReplyMode): number {
  const header = mode === 'extended' ? Size.EXTENDED_REQUEST : Size.REQUEST;
  return calls.reduce((n, c) => n + header + (c.kind === 'write' ? c.length : 0), 0);
}

export function negotiation(options: ClientOptions, mode: ReplyMode, exportName: string): Step[] {
  const steps: Step[] = [send(encodeGreeting()), awaitBytes(4)];
  if (options.extendedHeaders) steps.push(awaitBytes(Size.OPTION_HEADER), optionReply(Option.EXTENDED_HEADERS, OptionReply.ACK));
  if (mode === 'structured') steps.push(awaitBytes(Size.OPTION_HEADER), optionReply(Option.STRUCTURED_REPLY, OptionReply.ACK));
  if (options.metaContexts && mode !== 'simple') {
    steps.push(
      awaitBytes(Size.OPTION_HEADER + encodeMetaContextRequest({ name: exportName, queries: options.metaContexts }).length),
      optionReply(Option.SET_META_CONTEXT, OptionReply.META_CONTEXT, encodeMetaContextReply(CONTEXT_ID, 'base:allocation'), 0),
      optionReply(Option.SET_META_CONTEXT, OptionReply.ACK),
    );
  }
  if (options.useExportName) {
    steps.push(awaitBytes(Size.OPTION_HEADER + Buffer.byteLength(exportName)));
    const reply = encodeExportNameReply(EXPORT_SIZE, EXPORT_FLAGS, options.noZeroes ?? true);
    steps.push(send(reply, [[0, 10]]));
    return steps;
  }
  const infoRequest = Size.OPTION_HEADER + encodeInfoRequest({ name: exportName, infos: [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE] }).length;
  const answer = (option: number): Step[] => [
    awaitBytes(infoRequest),
    optionReply(option, OptionReply.INFO, encodeInfoExport(EXPORT_SIZE, EXPORT_FLAGS), 2),
    optionReply(option, OptionReply.INFO, encodeInfoBlockSize({ minimum: 512, preferred: 4096, maximum: 4 * 1024 * 1024 }), 2),
    optionReply(option, OptionReply.ACK),
  ];
  if (options.infoBeforeGo) steps.push(...answer(Option.INFO));
  steps.push(...answer(Option.GO));
  return steps;
}

function replies(calls: ClientCall[], mode: ReplyMode, withHole: boolean): Step[][] {
  return calls.map((c, i) => {
    const cookie = BigInt(i + 1);
    if (mode === 'simple') {
      if (c.kind === 'read') return [simpleReadReply(cookie, c.offset, c.length)];
      return [send(encodeSimpleReply(cookie, 0))];
    }
    const at = c.kind === 'flush' ? 0 : c.offset;
    if (c.kind === 'read' && withHole && c.offset === 0) {
      return [dataChunk(mode, cookie, at, 0, 1024, false), holeChunk(mode, cookie, at, 1024, 1024, false), dataChunk(mode, cookie, at, 2048, 2048, true)];
    }
    if (c.kind === 'read') return [dataChunk(mode, cookie, at, c.offset, c.length, true)];
    if (c.kind === 'status') return [statusChunk(mode, cookie, at, STATUS_EXTENTS, false), chunk(mode, cookie, at, ReplyType.NONE, true, Buffer.alloc(0), null)];
    // Structured mode may answer commands without payload with a simple reply; extended may not.
    if (c.kind === 'flush' && mode === 'structured') return [send(encodeSimpleReply(cookie, 0))];
    return [chunk(mode, cookie, at, ReplyType.NONE, true, Buffer.alloc(0), null)];
  });
}

export interface Variant {
  name: string;
  options: ClientOptions;
}

/** The client configurations the fuzz covers. */
export const VARIANTS: readonly Variant[] = [
  { name: 'structured + base:allocation', options: { exportName: 'disk', metaContexts: ['base:allocation'] } },
  { name: 'structured, INFO before GO', options: { exportName: 'disk', infoBeforeGo: true } },
  { name: 'extended headers + base:allocation', options: { exportName: 'disk', extendedHeaders: true, metaContexts: ['base:allocation'] } },
  { name: 'simple replies', options: { exportName: 'disk', structuredReplies: false } },
  { name: 'EXPORT_NAME with zero padding', options: { exportName: 'disk', structuredReplies: false, useExportName: true, noZeroes: false } },
  { name: 'LIST', options: {} },
];

export function conversation(variant: Variant, random: () => number): Conversation {
  if (variant.name === 'LIST') {
    const names = ['disk', 'other', 'vm'];
    const steps: Step[] = [send(encodeGreeting()), awaitBytes(4), awaitBytes(Size.OPTION_HEADER)];
    for (const name of names) steps.push(optionReply(Option.LIST, OptionReply.SERVER, encodeServerReply(name, `the ${name} export`), 0));
    steps.push(optionReply(Option.LIST, OptionReply.ACK), awaitBytes(Size.OPTION_HEADER));
    return { name: variant.name, list: true, options: {}, steps, calls: [], expected: [], exportNames: names };
  }
  const options = variant.options;
  const mode: ReplyMode = options.extendedHeaders ? 'extended' : options.structuredReplies === false ? 'simple' : 'structured';
  const calls = CALLS.filter((c) => c.kind !== 'status' || (mode !== 'simple' && options.metaContexts !== undefined));
  const withHole = mode !== 'simple';
  const steps = negotiation(options, mode, options.exportName ?? '');
  steps.push(awaitBytes(requestBytes(calls, mode)), ...interleave(replies(calls, mode, withHole), random));
  return { name: variant.name, list: false, options, steps, calls, expected: expectedOf(calls, withHole, mode), exportNames: [] };
}
