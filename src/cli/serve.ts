/** `stackbd serve`: serves images and stacks over NBD until SIGINT or SIGTERM. */
import fs from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import type { JsonServer } from '../server/http-json.js';
import { loadConfig } from '../server/config.js';
import type { Export } from '../server/export.js';
import { NbdServer, removeStaleSocket } from '../server/server.js';
import { loadTlsSettings, type TlsMode } from '../server/tls.js';
import { parseAllowList } from './allow-list.js';
import { prepareDemo } from './demo.js';
import { parseExportSpec, type ExportSpec } from './export-spec.js';
import { BACKING_OPTION } from './image-args.js';
import { warnIfExposed } from './exposure-warning.js';
import { createLogger, LOG_LEVELS, type LogLevel } from './logger.js';
import { logNativeStatus } from './native-notice.js';
import { openExport } from './open-export.js';
import { remoteOptionsFrom, withRemoteOptions, type RemoteArgs } from './remote-options.js';
import { formatHostPort, parseListenAddress, type TcpAddress } from './parse-address.js';
import { notifyServiceManager } from './sd-notify.js';
import { SharedLayers } from '../stack/shared-layers.js';
import { parseSize } from './size.js';
import { inheritedListenFds, planListeners } from './socket-activation.js';
import { UsageError } from './usage-error.js';

interface ServeArgs extends RemoteArgs {
  config?: string;
  tls: TlsMode;
  'tls-cert'?: string;
  'tls-key'?: string;
  'tls-ca'?: string;
  'tls-psk'?: string;
  'max-connections': number;
  allow?: string[];
  'socket-mode'?: string;
  'handshake-timeout': number;
  'max-in-flight': string;
  'admin-socket'?: string;
  'admin-listen'?: string;
  'admin-token-file'?: string;
  listen?: string[];
  socket?: string[];
  export?: string[];
  'read-only': boolean;
  'cache-max-size'?: string;
  'record-reads'?: string;
  'sync-interval': number;
  'log-level': LogLevel;
  demo: boolean;
  'demo-dir': string;
  backing: boolean;
}

function builder(y: Argv): Argv<ServeArgs> {
  return withRemoteOptions(y)
    .option('config', { type: 'string', describe: 'JSON file of exports (and listeners); see the README' })
    .option('listen', { type: 'string', array: true, describe: 'TCP address HOST:PORT to listen on (default 127.0.0.1:10809)' })
    .option('socket', { type: 'string', array: true, describe: 'unix socket path to listen on' })
    .option('export', {
      type: 'string',
      array: true,
      describe: 'NAME=BASE[,LAYER...] (bottom first); a bare PATH is the default export ""',
    })
    .option('read-only', { type: 'boolean', default: false, describe: 'serve every export read-only' })
    .option('backing', BACKING_OPTION)
    .option('cache-max-size', {
      type: 'string',
      describe: 'cache layers keep at most this much data, least recently used given up first (instead of the limit each records)',
    })
    .option('record-reads', {
      type: 'string',
      describe: 'record what clients read of each export in DIR/NAME.ranges (for stackbd warm --ranges)',
    })
    .option('sync-interval', {
      type: 'number',
      describe: 'seconds between syncs of written data when clients send no FLUSH (0 = only on flush/close)',
    })
    .option('tls', { choices: ['off', 'on', 'require'] as const, default: 'off' as TlsMode, describe: 'STARTTLS: off, offered (on), or required' })
    .option('tls-cert', { type: 'string', describe: 'server certificate (PEM)' })
    .option('tls-key', { type: 'string', describe: 'server private key (PEM)' })
    .option('tls-ca', { type: 'string', describe: 'CA certificate (PEM): clients must present a certificate it signed' })
    .option('tls-psk', { type: 'string', describe: 'pre-shared keys file, lines identity:hexkey (instead of certificates)' })
    .option('max-connections', { type: 'number', default: 0, describe: 'refuse connections beyond this many (0 = no limit)' })
    .option('allow', { type: 'string', array: true, describe: 'client address or CIDR allowed over TCP (repeatable; default all)' })
    .option('socket-mode', { type: 'string', describe: 'file mode of unix sockets, octal, e.g. 660' })
    .option('handshake-timeout', { type: 'number', default: 30, describe: 'seconds a client may take to finish negotiation' })
    .option('max-in-flight', { type: 'string', default: '64M', describe: 'bytes of requests in flight per connection before reading pauses' })
    .option('admin-socket', { type: 'string', describe: 'serve the admin API (and /metrics) on this unix socket' })
    .option('admin-listen', { type: 'string', describe: 'serve the admin API on this loopback HOST:PORT (needs --admin-token-file)' })
    .option('admin-token-file', { type: 'string', describe: 'file holding the bearer token for the admin API over TCP' })
    .option('log-level', { choices: LOG_LEVELS, default: 'info' as LogLevel, describe: 'log level (logs go to stderr)' })
    .option('demo', { type: 'boolean', default: false, describe: 'serve the demo image (created if missing)' })
    .option('demo-dir', { type: 'string', default: '.demo', describe: 'where the demo image lives' }) as unknown as Argv<ServeArgs>;
}

interface PlannedExport extends ExportSpec {
  readOnly: boolean;
  description?: string;
  /** The config file's base says `"noBacking": true` (`--no-backing` says so for every export). */
  noBacking?: boolean;
}

async function handler(args: ServeArgs): Promise<void> {
  const log = await createLogger(args['log-level']);
  // Signals are caught from the start: one that arrives while exports open still ends in an
  // orderly shutdown once they are open.
  let signalled: (signal: NodeJS.Signals) => void = () => undefined;
  const stopRequested = new Promise<NodeJS.Signals>((resolve) => {
    signalled = resolve;
  });
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    stopping = true;
    signalled(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const config = args.config ? await loadConfig(args.config) : null;
  const inherited = inheritedListenFds(process.env, process.pid);
  const listeners = planListeners(inherited.length, config, args);
  const tcp: TcpAddress[] = listeners.tcp.map(parseListenAddress);
  const sockets = listeners.sockets;
  const syncInterval = args['sync-interval'] ?? config?.syncInterval ?? 5;
  if (!(syncInterval >= 0)) throw new UsageError('--sync-interval must be 0 or more seconds');

  const tls = await loadTlsSettings({
    mode: args.tls,
    cert: args['tls-cert'],
    key: args['tls-key'],
    ca: args['tls-ca'],
    pskFile: args['tls-psk'],
  });
  const allow = parseAllowList(args.allow ?? []);
  const socketMode = args['socket-mode'] === undefined ? undefined : parseMode(args['socket-mode']);
  if (!(args['handshake-timeout'] > 0)) throw new UsageError('--handshake-timeout must be more than 0 seconds');
  if (!(args['max-connections'] >= 0)) throw new UsageError('--max-connections must be 0 (no limit) or more');
  const maxInFlight = parseSize(args['max-in-flight']);
  if (maxInFlight < 1024 * 1024) throw new UsageError('--max-in-flight must be at least 1M');

  const adminListen = args['admin-listen'] ? parseListenAddress(args['admin-listen']) : null;
  if (adminListen && !['127.0.0.1', '::1', 'localhost'].includes(adminListen.host)) {
    throw new UsageError('--admin-listen must be a loopback address (127.0.0.1 or [::1]); use --admin-socket otherwise');
  }
  if (adminListen && !args['admin-token-file']) throw new UsageError('--admin-listen needs --admin-token-file');
  const adminToken = args['admin-token-file'] ? await readToken(args['admin-token-file']) : undefined;

  let specs: PlannedExport[] = [
    ...(config?.exports ?? []).map((e) => ({ name: e.name, paths: e.layers, readOnly: e.readOnly || args['read-only'], description: e.description, noBacking: e.noBacking })),
    ...(args.export ?? []).map(parseExportSpec).map((e) => ({ ...e, readOnly: args['read-only'] })),
  ];
  if (specs.length === 0 || args.demo) {
    const demo = await prepareDemo(args['demo-dir']);
    specs = [...specs, { ...demo, readOnly: args['read-only'] }];
    log.info({ paths: demo.paths }, 'serving the demo stack');
  }
  const names = new Set<string>();
  for (const spec of specs) {
    if (names.has(spec.name)) throw new UsageError(`export "${spec.name}" is given twice`);
    names.add(spec.name);
  }

  const remote = await remoteOptionsFrom(args);
  const cacheLimit = args['cache-max-size'] === undefined ? undefined : parseSize(args['cache-max-size'], '--cache-max-size');
  // Once the arguments are known to be good: a usage error stays one line.
  logNativeStatus(log);
  const recordReadsDir = args['record-reads'];
  if (recordReadsDir !== undefined) await fs.mkdir(recordReadsDir, { recursive: true });
  const defaults = {
    syncIntervalMs: syncInterval * 1000,
    log,
    remote,
    cacheLimit,
    noBacking: !args.backing,
    ...(recordReadsDir !== undefined ? { recordReadsDir } : {}),
    // One registry for the whole server: exports over one base share one open of it.
    shared: new SharedLayers(),
  };
  const exports: Export[] = [];
  try {
    for (const spec of specs) {
      exports.push(await openExport({ name: spec.name, layers: spec.paths, readOnly: spec.readOnly, description: spec.description, noBacking: spec.noBacking }, defaults));
    }
  } catch (err) {
    await Promise.allSettled(exports.map((e) => e.close()));
    throw err;
  }
  warnIfExposed(log, tcp, args.tls === 'require', exports);

  const server = new NbdServer(exports, {
    logger: log,
    tls,
    maxConnections: args['max-connections'],
    allow,
    ...(socketMode !== undefined ? { socketMode } : {}),
    session: { negotiationTimeoutMs: args['handshake-timeout'] * 1000, maxBytesInFlight: maxInFlight },
  });
  let admin: JsonServer | null = null;
  const uris: string[] = [];
  const addUris = (tcpHostPort: string | null, unixPath: string | null): void => {
    for (const spec of specs) {
      const name = encodeURIComponent(spec.name);
      if (tcpHostPort) uris.push(`${tls ? 'nbds' : 'nbd'}://${tcpHostPort}/${name}`);
      if (unixPath) uris.push(`${tls ? 'nbds+unix' : 'nbd+unix'}:///${name}?socket=${unixPath}`);
    }
  };
  try {
    if (listeners.skipped.length > 0) log.info({ skipped: listeners.skipped }, 'socket activation: the config file\'s listeners are left to the socket unit');
    for (const fd of inherited) {
      const bound = await server.listenFd(fd);
      log.info({ fd, address: typeof bound === 'string' ? bound : formatHostPort(bound.address, bound.port) }, 'listening');
      if (typeof bound !== 'string') addUris(formatHostPort(bound.address, bound.port), null);
    }
    for (const address of tcp) {
      const bound = await server.listenTcp(address.host, address.port);
      const hostPort = formatHostPort(bound.address, bound.port);
      log.info({ address: hostPort, tcp: { host: bound.address, port: bound.port } }, 'listening');
      addUris(hostPort, null);
    }
    for (const path of sockets) {
      await server.listenUnix(path);
      log.info({ address: path, unix: path }, 'listening');
      addUris(null, path);
    }
    if (args['admin-socket'] || adminListen) {
      // Loaded only when asked for: prom-client costs startup time.
      const { buildAdminApi } = await import('../server/admin-api.js');
      const { ServerMetrics } = await import('../server/metrics.js');
      const metrics = new ServerMetrics(server);
      admin = buildAdminApi({ server, metrics, logger: log, token: adminToken, openExport: (request) => openExport(request, defaults) });
      if (args['admin-socket']) {
        await removeStaleSocket(args['admin-socket']);
        await admin.listenUnix(args['admin-socket']);
        await fs.chmod(args['admin-socket'], 0o600);
        log.info({ admin: args['admin-socket'] }, 'admin API listening');
      }
      if (adminListen) {
        const { port } = await admin.listenTcp(adminListen.host, adminListen.port);
        log.info({ admin: formatHostPort(adminListen.host, port), adminTcp: { host: adminListen.host, port } }, 'admin API listening');
      }
    }
  } catch (err) {
    await admin?.close();
    await server.close();
    throw err;
  }
  log.info({ exports: specs.map((s) => s.name), uris }, 'serving');
  if (process.stdout.isTTY) {
    console.log(`stackbd is serving ${specs.length} export(s). Connect with:`);
    for (const uri of uris) console.log(`  ${uri}`);
    console.log('Press Ctrl-C to stop.');
  }

  // systemd (Type=notify) counts the service as started from here on.
  await notifyServiceManager(log, ['READY=1', `STATUS=serving ${specs.length} export(s)`]);

  const signal = await stopRequested;
  log.info({ signal }, 'shutting down');
  const stoppingSent = notifyServiceManager(log, ['STOPPING=1', 'STATUS=finishing requests in flight and syncing']);
  try {
    await admin?.close();
    await server.close();
  } catch (err) {
    log.error({ err }, 'shutdown failed');
    process.exitCode = 1;
  }
  await stoppingSent;
}

async function readToken(file: string): Promise<string> {
  const token = (await fs.readFile(file, 'utf8').catch(() => {
    throw new UsageError(`--admin-token-file ${file}: cannot read it`);
  })).trim();
  if (token.length < 16) throw new UsageError(`--admin-token-file ${file}: the token must be at least 16 characters`);
  return token;
}

function parseMode(text: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) throw new UsageError(`--socket-mode ${text}: expected an octal mode like 660`);
  return parseInt(text, 8);
}

export const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'serve disk images and stacks over NBD',
  builder,
  handler,
};
