// @ts-check
/**
 * An HTTP/1.1 forwarding proxy that adds latency, for scripts/bench/remote.sh: every request
 * waits DELAY ms before it is forwarded, and every response DELAY ms before it is answered
 * (so DELAY each way). It listens on 127.0.0.1 port 0 and prints the port on stdout.
 *
 *   node latency-proxy.mjs UPSTREAM_PORT DELAY_MS
 */
import http from 'node:http';

const upstreamPort = Number(process.argv[2]);
const delayMs = Number(process.argv[3] ?? 5);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const server = http.createServer(async (req, res) => {
  await sleep(delayMs);
  const up = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers, agent }, async (upRes) => {
    await sleep(delayMs);
    res.writeHead(upRes.statusCode ?? 502, upRes.headers);
    upRes.pipe(res);
  });
  up.on('error', () => res.socket?.destroy());
  req.pipe(up);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`);
});
process.on('SIGTERM', () => process.exit(0));
