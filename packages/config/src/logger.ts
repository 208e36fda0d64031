import pino, { type Logger } from 'pino';

/** Structured JSON logs on stdout, one object a line, with the process's role in each. */
export function createLogger(service: string, level: string): Logger {
  return pino({ level, base: { service, pid: process.pid } });
}
