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
