/**
 * What an export has done, by operation: requests, bytes, errors by NBD error number, and the
 * latency of each request. Kept as plain numbers on the hot path; the metrics endpoint and the
 * admin API read them when asked. A latency observer (Prometheus histograms) may be attached.
 */
export const OPERATIONS = ['read', 'write', 'flush', 'trim', 'cache', 'zero', 'block_status'] as const;
export type Operation = (typeof OPERATIONS)[number];

export interface OperationStats {
  requests: number;
  bytes: number;
  errors: number;
}

export type LatencyObserver = (op: Operation, seconds: number) => void;

export class ExportStats {
  readonly byOperation: Record<Operation, OperationStats>;
  /** Failed requests by NBD error number. */
  readonly errorsByErrno = new Map<number, number>();
  syncs = 0;
  syncSeconds = 0;
  latencyObserver: LatencyObserver | null = null;

  constructor() {
    const entries = OPERATIONS.map((op) => [op, { requests: 0, bytes: 0, errors: 0 }] as const);
    this.byOperation = Object.fromEntries(entries) as Record<Operation, OperationStats>;
  }

  /** One finished request; `errno` 0 for success. */
  record(op: Operation, bytes: number, seconds: number, errno: number): void {
    const s = this.byOperation[op];
    s.requests++;
    if (errno === 0) s.bytes += bytes;
    else {
      s.errors++;
      this.errorsByErrno.set(errno, (this.errorsByErrno.get(errno) ?? 0) + 1);
    }
    this.latencyObserver?.(op, seconds);
  }

  recordSync(seconds: number): void {
    this.syncs++;
    this.syncSeconds += seconds;
  }

  toJSON(): { operations: Record<Operation, OperationStats>; errors: Record<string, number>; syncs: number; syncSeconds: number } {
    return {
      operations: this.byOperation,
      errors: Object.fromEntries([...this.errorsByErrno].map(([errno, n]) => [String(errno), n])),
      syncs: this.syncs,
      syncSeconds: this.syncSeconds,
    };
  }
}
