/** An NbdServer in the test's own process, on a port it picks itself, with RAW exports. */
import { pino } from 'pino';
import { openRaw } from '../../src/formats/raw.js';
import type { Layer } from '../../src/formats/layer.js';
import { Export } from '../../src/server/export.js';
import { NbdServer } from '../../src/server/server.js';
import type { SessionOptions } from '../../src/server/session.js';
import { Stack } from '../../src/stack/stack.js';

export interface TestExport {
  name: string;
  /** Layers bottom first (already opened), or a RAW file path. */
  layers?: Layer[];
  rawPath?: string;
  readOnly?: boolean;
  description?: string;
  syncIntervalMs?: number;
}

export interface InProcessServer {
  server: NbdServer;
  port: number;
  target: { kind: 'tcp'; host: string; port: number };
  close(): Promise<void>;
}

export async function startInProcessServer(exports: TestExport[], session?: Partial<SessionOptions>): Promise<InProcessServer> {
  const logger = pino({ level: process.env.STACKBD_TEST_LOG ?? 'silent' });
  const built: Export[] = [];
  for (const e of exports) {
    const layers = e.layers ?? [await openRaw(e.rawPath!, { readOnly: e.readOnly })];
    built.push(new Export(new Stack(layers, { readOnly: e.readOnly }), { name: e.name, description: e.description, syncIntervalMs: e.syncIntervalMs, logger }));
  }
  const server = new NbdServer(built, { logger, session });
  const address = await server.listenTcp('127.0.0.1', 0);
  return {
    server,
    port: address.port,
    target: { kind: 'tcp', host: '127.0.0.1', port: address.port },
    close: () => server.close(),
  };
}
