/**
 * Where validation reports what it finds. Opening an image and checking it apply the same rules
 * (spec §2, §5, §6); they differ only in what happens next:
 * - open: the first problem ends the open with a typed error naming the file;
 * - check: every problem is collected and the scan goes on where it safely can.
 * Each message says what is wrong and where ("table 3 (chunk 17), entry of chunk 42: ...").
 */
import { CorruptedImageError, UnsupportedFormatError } from '../../block/errors.js';

export interface ProblemSink {
  /** The file breaks a rule of the format. */
  corrupt(detail: string): void;
  /** The file uses a version or feature this engine does not handle. */
  unsupported(detail: string): void;
}

/** Throws at the first problem: the behaviour of open. */
export function throwingSink(file: string): ProblemSink {
  return {
    corrupt(detail) {
      throw new CorruptedImageError(file, detail);
    },
    unsupported(detail) {
      throw new UnsupportedFormatError(file, detail);
    },
  };
}

/** Collects every problem: the behaviour of check. */
export class CollectingSink implements ProblemSink {
  readonly errors: string[] = [];

  corrupt(detail: string): void {
    this.errors.push(detail);
  }

  unsupported(detail: string): void {
    this.errors.push(`unsupported: ${detail}`);
  }
}

/** Hex for messages: offsets and raw values read best in hex. */
export function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}
