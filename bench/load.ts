/**
 * The load generator: a process of its own, so that the CPU it burns is not charged to the
 * processes it measures, and nothing it does shares their event loops. `load-process.ts` forks it
 * with an IPC channel, sends one `LoadPlan`, gets a `tick` a second and one `done` with the result.
 *
 * Each request is built on the fly (autocannon `setupRequest`): a seller drawn uniformly from the
 * plan's sellers, its own api key, a phone number from a pool, an amount from a small set, and an
 * `X-Request-Id` of `<plan name>-<n>` that the API records on the job row, so the jobs of a phase
 * can be found in the jobs table afterwards.
 */
import autocannon, { type Request, type RequestParams, type Result } from 'autocannon';

export interface BenchSeller {
  id: string;
  key: string;
}

export interface LoadPlan {
  /** Letters only: it prefixes request ids and must not contain LIKE wildcards. */
  name: string;
  url: string;
  /** `sales`: every request a sale. `mixed`: of every 20 requests 18 sales, a credit request, its approval. */
  mode: 'sales' | 'mixed';
  sellers: BenchSeller[];
  adminToken: string;
  durationSeconds: number;
  maxRequests: number;
  connections: number;
  /** Requests per second in all (open loop); absent: each connection sends as soon as answered. */
  rate?: number;
}

export type RequestKind = 'sale' | 'credit_request' | 'approval';

export interface LoadResult {
  durationSeconds: number;
  responses: number;
  ok: number;
  notOk: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  /** Responses by kind of request and status code. */
  byKind: Record<RequestKind, Record<string, number>>;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** CPU the load generator itself used (user + system), to show it was not the limit. */
  cpuSeconds: number;
}

export type LoadMessage =
  | { type: 'tick'; second: number; responses: number; ok: number; notOk: number }
  | { type: 'done'; result: LoadResult }
  | { type: 'failed'; message: string };

/** 10,000 distinct numbers: phone totals get both new rows and updates, as in real traffic. */
const phones = Array.from({ length: 10_000 }, (_, i) => `0912${String(i * 7 + 1_000_000).padStart(7, '0')}`);
const amounts = [1_000, 2_000, 5_000, 10_000, 20_000];
const creditAmount = 1_000_000;
/** A request id that matches nothing, for an approval whose credit request was refused. */
const nilUuid = '00000000-0000-0000-0000-000000000000';

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)] as T;

interface Context {
  creditRequestId?: string;
}

function run(plan: LoadPlan): void {
  // Startup (loading tsx and autocannon) is not load.
  const cpuAtStart = process.cpuUsage();
  const byKind: LoadResult['byKind'] = { sale: {}, credit_request: {}, approval: {} };
  let seq = 0;
  let ok = 0;
  let notOk = 0;
  const requestId = () => `${plan.name}-${++seq}`;
  const count = (kind: RequestKind, status: number) => {
    const counts = byKind[kind];
    counts[status] = (counts[status] ?? 0) + 1;
    if (status >= 200 && status < 300) ok++;
    else notOk++;
  };
  const headers = (token: string) => ({
    'content-type': 'application/json',
    authorization: `Bearer ${token}`,
    'x-request-id': requestId(),
  });

  const sale: Request<Context> = {
    method: 'POST',
    path: '/api/charge-sales',
    setupRequest: (request: RequestParams) => {
      const seller = pick(plan.sellers);
      return {
        ...request,
        headers: headers(seller.key),
        body: JSON.stringify({ seller_id: seller.id, phone_number: pick(phones), amount: pick(amounts) }),
      };
    },
    onResponse: (status) => count('sale', status),
  };
  const creditRequest: Request<Context> = {
    method: 'POST',
    path: '/api/credit-requests',
    setupRequest: (request, context) => {
      const seller = pick(plan.sellers);
      context.creditRequestId = undefined;
      return {
        ...request,
        headers: headers(seller.key),
        body: JSON.stringify({ seller: seller.id, amount: creditAmount }),
      };
    },
    onResponse: (status, body, context) => {
      count('credit_request', status);
      if (status === 201) context.creditRequestId = (JSON.parse(body) as { id: string }).id;
    },
  };
  const approval: Request<Context> = {
    method: 'POST',
    setupRequest: (request, context) => ({
      ...request,
      path: `/api/credit-requests/${context.creditRequestId ?? nilUuid}/process`,
      headers: headers(plan.adminToken),
      body: JSON.stringify({ action: 'approve' }),
    }),
    onResponse: (status) => count('approval', status),
  };
  const requests =
    plan.mode === 'sales' ? [sale] : [...Array.from({ length: 18 }, () => sale), creditRequest, approval];

  let second = 0;
  const instance = autocannon<Context>(
    {
      url: plan.url,
      connections: plan.connections,
      duration: plan.durationSeconds,
      maxOverallRequests: plan.maxRequests,
      ...(plan.rate ? { overallRate: plan.rate } : {}),
      timeout: 30,
      requests,
      initialContext: {},
    },
    (error, result: Result) => {
      if (error) return send({ type: 'failed', message: error.message }, 1);
      const cpuUsed = process.cpuUsage(cpuAtStart);
      const statusCodes = Object.fromEntries(Object.entries(result.statusCodeStats).map(([k, v]) => [k, v.count]));
      send(
        {
          type: 'done',
          result: {
            durationSeconds: result.duration,
            responses: ok + notOk,
            ok,
            notOk,
            errors: result.errors,
            timeouts: result.timeouts,
            statusCodes,
            byKind,
            latencyMs: {
              p50: result.latency.p50,
              p90: result.latency.p90,
              p99: result.latency.p99,
              max: result.latency.max,
              mean: result.latency.mean,
            },
            cpuSeconds: (cpuUsed.user + cpuUsed.system) / 1e6,
          },
        },
        0,
      );
    },
  );
  instance.on('tick', () => {
    second++;
    send({ type: 'tick', second, responses: ok + notOk, ok, notOk });
  });
}

function send(message: LoadMessage, exitCode?: number): void {
  process.send?.(message, undefined, {}, () => {
    if (exitCode !== undefined) process.exit(exitCode);
  });
}

process.once('message', (plan: LoadPlan) => {
  try {
    run(plan);
  } catch (error) {
    send({ type: 'failed', message: (error as Error).message }, 1);
  }
});
