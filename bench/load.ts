/**
 * The autocannon load generator (the default; `--load wrk` drives the same workloads with wrk,
 * bench/load-wrk.ts): a process of its own, so that the CPU it burns is not charged to the
 * processes it measures, and nothing it does shares their event loops. `load-process.ts` forks it
 * with an IPC channel, sends one `LoadPlan`, gets a `tick` a second and one `done` with the result.
 *
 * Each request is built on the fly (autocannon `setupRequest`): a seller drawn uniformly from the
 * plan's sellers, its own api key, a phone number from a pool, an amount from a small set, and an
 * `X-Request-Id` of `<plan name>-<n>` that the API records on the job row, so the jobs of a phase
 * can be found in the jobs table afterwards.
 */
import autocannon, { type Request, type RequestParams, type Result } from 'autocannon';
import { amounts, creditAmount, MIXED_SALES, nilUuid, phones } from './request-mix.ts';

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
  /**
   * The request shape: `product` is the product's (the sync server takes it too), a sale being
   * `POST /api/charge-sales` with the seller's api key; `ceiling` is the bare pipeline's
   * (bench/ceiling.ts), `POST /sale` with an integer seller id and no authentication.
   */
  target: 'product' | 'ceiling';
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

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)] as T;

interface Context {
  creditRequestId?: string;
}

function run(plan: LoadPlan): void {
  if (plan.target === 'ceiling' && plan.mode !== 'sales') throw new Error('the bare pipeline takes sales only');
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

  const productSale = (request: RequestParams): RequestParams => {
    const seller = pick(plan.sellers);
    return {
      ...request,
      headers: headers(seller.key),
      body: JSON.stringify({ seller_id: seller.id, phone_number: pick(phones), amount: pick(amounts) }),
    };
  };
  // The bare pipeline has no authentication; the request id costs it a header, as it does the product.
  const ceilingSale = (request: RequestParams): RequestParams => ({
    ...request,
    headers: { 'content-type': 'application/json', 'x-request-id': requestId() },
    body: JSON.stringify({
      seller_id: Number(pick(plan.sellers).id),
      phone_number: pick(phones),
      amount: pick(amounts),
    }),
  });
  const sale: Request<Context> = {
    method: 'POST',
    path: plan.target === 'ceiling' ? '/sale' : '/api/charge-sales',
    setupRequest: plan.target === 'ceiling' ? ceilingSale : productSale,
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
    plan.mode === 'sales' ? [sale] : [...Array.from({ length: MIXED_SALES }, () => sale), creditRequest, approval];

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
