/**
 * systemd socket activation: listening sockets handed over as file descriptors 3, 4, ... with
 * LISTEN_FDS=count and LISTEN_PID=our pid (sd_listen_fds(3)). Anything else means none.
 */
export const SD_LISTEN_FDS_START = 3;

export function inheritedListenFds(env: NodeJS.ProcessEnv, pid: number): number[] {
  const count = Number(env.LISTEN_FDS);
  if (!env.LISTEN_FDS || !Number.isInteger(count) || count <= 0) return [];
  if (env.LISTEN_PID && Number(env.LISTEN_PID) !== pid) return [];
  return Array.from({ length: count }, (_, i) => SD_LISTEN_FDS_START + i);
}

export interface ListenerPlan {
  /** TCP addresses to bind, as written (HOST:PORT). */
  tcp: string[];
  /** Unix socket paths to bind. */
  sockets: string[];
  /** Listeners of the config file left unbound because systemd handed over its sockets. */
  skipped: string[];
}

/**
 * What to bind besides inherited sockets. With socket activation the socket unit owns the
 * listeners: the config file's `listen` and `socket` are not bound as well (the socket unit
 * usually holds those very addresses, and binding them again fails with EADDRINUSE), so one
 * config serves both with and without systemd. Addresses given on the command line are bound
 * in either case. Without inherited sockets and without any listener, 127.0.0.1:10809.
 */
export function planListeners(
  inherited: number,
  config: { listen: string[]; socket: string[] } | null,
  args: { listen?: string[]; socket?: string[] },
): ListenerPlan {
  const fromConfig = { tcp: config?.listen ?? [], sockets: config?.socket ?? [] };
  const fromArgs = { tcp: args.listen ?? [], sockets: args.socket ?? [] };
  if (inherited > 0) return { ...fromArgs, skipped: [...fromConfig.tcp, ...fromConfig.sockets] };
  const tcp = [...fromConfig.tcp, ...fromArgs.tcp];
  const sockets = [...fromConfig.sockets, ...fromArgs.sockets];
  if (tcp.length === 0 && sockets.length === 0) tcp.push('127.0.0.1:10809');
  return { tcp, sockets, skipped: [] };
}
