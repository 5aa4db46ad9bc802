/**
 * The numbers of the NBD protocol (doc/proto.md of NetworkBlockDevice/nbd, with the
 * EXTENDED_HEADERS extension and QEMU's metadata contexts). Everything on the wire is
 * big-endian.
 */

export const NBD_DEFAULT_PORT = 10809;

export const Magic = {
  /** 'NBDMAGIC', first 8 bytes of the server greeting. */
  NBDMAGIC: 0x4e42444d41474943n,
  /** 'IHAVEOPT', in the greeting and in front of every option. */
  IHAVEOPT: 0x49484156454f5054n,
  OPTION_REPLY: 0x0003e889045565a9n,
  REQUEST: 0x25609513,
  EXTENDED_REQUEST: 0x21e41c71,
  SIMPLE_REPLY: 0x67446698,
  STRUCTURED_REPLY: 0x668e33ef,
  EXTENDED_REPLY: 0x6e8a278c,
} as const;

export const HandshakeFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

export const ClientFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;
export const KNOWN_CLIENT_FLAGS = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;

export const Option = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

export const OptionReply = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
  ERR_EXT_HEADER_REQD: 0x8000000a,
} as const;

export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

export const TransmissionFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
  BLOCK_STATUS_PAYLOAD: 1 << 12,
} as const;

export const Command = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;
export type CommandType = (typeof Command)[keyof typeof Command];

export const CommandFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
  PAYLOAD_LEN: 1 << 5,
} as const;

export const ReplyFlag = {
  DONE: 1 << 0,
} as const;

export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  BLOCK_STATUS_EXT: 6,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** base:allocation status bits. */
export const AllocationState = {
  HOLE: 1 << 0,
  ZERO: 1 << 1,
} as const;

/** qemu:dirty-bitmap status bit. */
export const DIRTY_STATE = 1;

export const MetaContext = {
  BASE_ALLOCATION: 'base:allocation',
  ALLOCATION_DEPTH: 'qemu:allocation-depth',
  DIRTY_BITMAP_PREFIX: 'qemu:dirty-bitmap:',
} as const;

/** Header sizes on the wire. */
export const Size = {
  GREETING: 18,
  OPTION_HEADER: 16,
  OPTION_REPLY_HEADER: 20,
  REQUEST: 28,
  EXTENDED_REQUEST: 32,
  SIMPLE_REPLY: 16,
  STRUCTURED_REPLY: 20,
  EXTENDED_REPLY: 32,
  EXPORT_NAME_PADDING: 124,
} as const;

/** Limits that protect the server from hostile or broken clients. */
export const Limits = {
  /** Longest option payload read during negotiation; longer ones close the connection. */
  MAX_OPTION_LENGTH: 64 * 1024,
  /** Longest string (export name, description, context name) the protocol allows. */
  MAX_STRING: 4096,
  /** Largest READ/WRITE payload advertised and accepted. */
  MAX_PAYLOAD: 32 * 1024 * 1024,
  /** Payloads above this are treated as an attack and close the connection. */
  MAX_PAYLOAD_HARD: 64 * 1024 * 1024,
} as const;

/** Limits that protect the client from hostile or broken servers: every length is checked against them before anything is allocated. */
export const ClientLimits = {
  /** Longest option reply payload (names and messages are at most 4096 bytes). */
  MAX_OPTION_REPLY: 64 * 1024,
  /** Most replies to one option (LIST, META_CONTEXT) before the server is judged hostile. */
  MAX_OPTION_REPLIES: 4096,
  /** Bytes buffered during negotiation before the socket is paused until they are read. */
  NEGOTIATION_HIGH_WATER: 1024 * 1024,
  /** Largest block status chunk payload: 131072 compact extents, 65536 extended ones. */
  MAX_STATUS_PAYLOAD: 1024 * 1024 + 8,
  /** Largest chunk that carries neither data nor status (error messages fit in a u16). */
  MAX_OTHER_PAYLOAD: 64 * 1024 + 16,
  /** Default maximum payload when the server sends no block size information. */
  DEFAULT_MAX_PAYLOAD: 32 * 1024 * 1024,
} as const;
