/** pino on stderr: JSON, or human-readable lines when stderr is a terminal. */
import { pino, type Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export async function createLogger(level: LogLevel): Promise<Logger> {
  if (process.stderr.isTTY) {
    // Loaded only for terminals: it costs startup time that services and tests need not pay.
    const { default: pretty } = await import('pino-pretty');
    return pino({ level }, pretty({ destination: 2, colorize: true, sync: true }));
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}
