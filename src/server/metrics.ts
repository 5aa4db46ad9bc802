/**
 * Prometheus metrics (prom-client), in a registry of the server's own. Counters are read from
 * the exports' stats when scraped, so the request path only bumps plain numbers; request
 * latencies go into histograms through the observer each export gets when it is attached.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Export } from './export.js';
import { OPERATIONS, type Operation } from './export-stats.js';

export interface MetricsSource {
  list(): Export[];
  readonly bytesInFlight: number;
  readonly requestsInFlight: number;
  readonly connectionsNotReading: number;
  readonly connectionCount: number;
}

const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly latency: Histogram<'export' | 'op'>;

  constructor(private readonly source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'stackbd_' });
    /** A counter or gauge with one series per export, filled from `value` when scraped. */
    const perExport = (fn: (exp: Export) => number) =>
      function (this: Counter<'export'> | Gauge<'export'>): void {
        this.reset();
        for (const exp of source.list()) {
          if (this instanceof Counter) this.inc({ export: exp.name }, fn(exp));
          else this.set({ export: exp.name }, fn(exp));
        }
      };
    const perOperation = (field: 'requests' | 'bytes' | 'errors') =>
      function (this: Counter<'export' | 'op'>): void {
        this.reset();
        for (const exp of source.list()) {
          for (const op of OPERATIONS) this.inc({ export: exp.name, op }, exp.stats.byOperation[op][field]);
        }
      };
    new Counter({ name: 'stackbd_requests_total', help: 'NBD requests answered, by export and operation', labelNames: ['export', 'op'], registers, collect: perOperation('requests') });
    new Counter({ name: 'stackbd_request_bytes_total', help: 'Bytes read, written, zeroed or trimmed by successful requests', labelNames: ['export', 'op'], registers, collect: perOperation('bytes') });
    new Counter({
      name: 'stackbd_request_errors_total',
      help: 'Failed requests by NBD error number',
      labelNames: ['export', 'errno'],
      registers,
      collect(this: Counter<'export' | 'errno'>) {
        this.reset();
        for (const exp of source.list()) for (const [errno, n] of exp.stats.errorsByErrno) this.inc({ export: exp.name, errno: String(errno) }, n);
      },
    });
    this.latency = new Histogram({ name: 'stackbd_request_duration_seconds', help: 'Time from parsing a request to sending its reply', labelNames: ['export', 'op'], buckets: LATENCY_BUCKETS, registers });
    new Gauge({ name: 'stackbd_connections', help: 'Open connections in transmission, by export', labelNames: ['export'], registers, collect: perExport((e) => e.connectionCount) });
    new Counter({ name: 'stackbd_cache_hit_bytes_total', help: 'Bytes read that the cache layer held', labelNames: ['export'], registers, collect: perExport((e) => e.stack.cacheStats.hitBytes) });
    new Counter({ name: 'stackbd_cache_miss_bytes_total', help: 'Bytes read through the cache layer from below it', labelNames: ['export'], registers, collect: perExport((e) => e.stack.cacheStats.missBytes) });
    new Counter({ name: 'stackbd_cache_stored_data_bytes_total', help: 'Bytes the cache layer stored as data (reads and warms)', labelNames: ['export'], registers, collect: perExport((e) => e.stack.cacheStats.storedDataBytes) });
    new Counter({ name: 'stackbd_cache_stored_zero_bytes_total', help: 'Bytes the cache layer stored as zeros', labelNames: ['export'], registers, collect: perExport((e) => e.stack.cacheStats.storedZeroBytes) });
    new Counter({ name: 'stackbd_syncs_total', help: 'Syncs (FLUSH, timer, last disconnect)', labelNames: ['export'], registers, collect: perExport((e) => e.stats.syncs) });
    new Counter({ name: 'stackbd_sync_seconds_total', help: 'Time spent in syncs', labelNames: ['export'], registers, collect: perExport((e) => e.stats.syncSeconds) });
    new Gauge({ name: 'stackbd_export_size_bytes', help: 'Virtual size of each export', labelNames: ['export'], registers, collect: perExport((e) => e.size) });
    new Gauge({ name: 'stackbd_bytes_in_flight', help: 'Bytes of requests in flight over all connections', registers, collect() { this.set(source.bytesInFlight); } });
    new Gauge({ name: 'stackbd_requests_in_flight', help: 'Requests started and not yet answered, over all connections', registers, collect() { this.set(source.requestsInFlight); } });
    new Gauge({ name: 'stackbd_connections_not_reading', help: 'Connections not reading requests: at the in-flight limit, or fencing after one', registers, collect() { this.set(source.connectionsNotReading); } });
    new Gauge({ name: 'stackbd_connections_open', help: 'All open connections, negotiating or not', registers, collect() { this.set(source.connectionCount); } });
    for (const exp of source.list()) this.attach(exp);
  }

  /** Starts recording an export's request latencies (call for exports added later). */
  attach(exp: Export): void {
    const children = new Map(OPERATIONS.map((op) => [op, this.latency.labels({ export: exp.name, op })] as const));
    exp.stats.latencyObserver = (op: Operation, seconds: number) => children.get(op)?.observe(seconds);
  }

  /** Forgets a removed export's histogram series. */
  detach(exp: Export): void {
    exp.stats.latencyObserver = null;
    for (const op of OPERATIONS) this.latency.remove({ export: exp.name, op });
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
