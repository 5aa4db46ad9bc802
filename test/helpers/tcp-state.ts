/**
 * The kernel's view of a TCP connection on this machine (/proc/net/tcp and tcp6), for tests that
 * must know a state was reached rather than wait and hope: e.g. CLOSE_WAIT on the server's side
 * means the client's FIN has arrived there.
 */
import fs from 'node:fs';

const STATES: Readonly<Record<string, string>> = {
  '01': 'ESTABLISHED',
  '02': 'SYN_SENT',
  '03': 'SYN_RECV',
  '04': 'FIN_WAIT1',
  '05': 'FIN_WAIT2',
  '06': 'TIME_WAIT',
  '07': 'CLOSE',
  '08': 'CLOSE_WAIT',
  '09': 'LAST_ACK',
  '0A': 'LISTEN',
  '0B': 'CLOSING',
};

/** The state of the socket whose local port is `localPort` and remote port `remotePort`, or null. */
export function tcpState(localPort: number, remotePort: number): string | null {
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const lines = fs.existsSync(table) ? fs.readFileSync(table, 'utf8').split('\n').slice(1) : [];
    for (const line of lines) {
      const [, local, remote, state] = line.trim().split(/\s+/);
      if (!local || !remote) continue;
      const port = (address: string): number => parseInt(address.slice(address.lastIndexOf(':') + 1), 16);
      if (port(local) === localPort && port(remote) === remotePort) return STATES[state] ?? state;
    }
  }
  return null;
}

/** Polls until `check` is true; fails with `what` if it is not within `timeoutMs`. */
export async function until(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`never reached: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
