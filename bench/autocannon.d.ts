// autocannon ships no types and @types/autocannon is not a dependency: these are the parts the
// load generator uses, as autocannon 9 defines them (lib/run.js, lib/requestIterator.js).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events';

  export interface RequestParams {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string;
  }

  export interface Request<Context> extends RequestParams {
    /** Builds the next request; a falsy answer restarts the connection's sequence. */
    setupRequest?: (request: RequestParams, context: Context) => RequestParams | undefined;
    onResponse?: (status: number, body: string, context: Context, headers: Record<string, string>) => void;
  }

  export interface Options<Context> {
    url: string;
    connections?: number;
    duration?: number;
    maxOverallRequests?: number;
    timeout?: number;
    method?: string;
    headers?: Record<string, string>;
    requests?: Request<Context>[];
    initialContext?: Context;
  }

  export interface Histogram {
    average: number;
    mean: number;
    stddev: number;
    min: number;
    max: number;
    p50: number;
    p90: number;
    p97_5: number;
    p99: number;
    p99_9: number;
    total?: number;
    sent?: number;
  }

  export interface Result {
    duration: number;
    start: Date;
    finish: Date;
    errors: number;
    timeouts: number;
    non2xx: number;
    resets: number;
    '2xx': number;
    statusCodeStats: Record<string, { count: number }>;
    latency: Histogram;
    requests: Histogram;
  }

  export interface Instance extends EventEmitter {
    stop(): void;
  }

  function autocannon<Context>(
    options: Options<Context>,
    done: (error: Error | null, result: Result) => void,
  ): Instance;
  export default autocannon;
}
