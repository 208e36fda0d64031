import { randomUUID } from 'node:crypto';
import { type ProviderSim, type ProviderSimStats, startProviderSim } from '@cs/delivery';
import { expect } from 'vitest';
import { type Client, readEventStream } from './http.ts';
import { ADMIN_TOKEN } from './system.ts';

export const PROVIDER_API_KEY = 'test-provider-key-0123456789';

/**
 * The provider simulator served over HTTP from the test process (`PROVIDER=http`), with its
 * control endpoints (packages/delivery/src/sim-server.ts) as calls: the workers of a system talk
 * to it as they would to a telecom operator, and the test makes it misbehave.
 */
export class TestProvider {
  private constructor(readonly sim: ProviderSim) {}

  /** `hangMs`: how long a "times out" send is held unanswered; keep it above PROVIDER_TIMEOUT_MS. */
  static async start({ hangMs = 2000 }: { hangMs?: number } = {}): Promise<TestProvider> {
    return new TestProvider(await startProviderSim({ port: 0, apiKey: PROVIDER_API_KEY, hangMs }));
  }

  get url(): string {
    return this.sim.url;
  }

  /** The system settings that point its workers at this provider, plus `extra`. */
  env(extra: Record<string, string> = {}): Record<string, string> {
    return { PROVIDER: 'http', PROVIDER_URL: this.url, PROVIDER_API_KEY, ...extra };
  }

  async call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${PROVIDER_API_KEY}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {}
    return { status: res.status, body: parsed };
  }

  /** Every /v1 call answers 503 and records nothing for `ms` (0 ends an outage). */
  async outage(ms: number): Promise<void> {
    expect((await this.call('POST', '/sim/outage', { ms })).status).toBe(200);
  }

  /** Each /v1 answer that much later; the work is done before the wait. */
  async latency(ms: number): Promise<void> {
    expect((await this.call('POST', '/sim/latency', { ms })).status).toBe(200);
  }

  async settle(reference: string, status: 'delivered' | 'failed') {
    return this.call('POST', '/sim/settle', { reference, status });
  }

  async stats(): Promise<ProviderSimStats> {
    const res = await this.call('GET', '/sim/stats');
    expect(res.status).toBe(200);
    return res.body as ProviderSimStats;
  }

  /** What the provider itself says about a reference (`GET /v1/topups/{reference}`). */
  async topUp(reference: string) {
    return this.call('GET', `/v1/topups/${encodeURIComponent(reference)}`);
  }

  close(): Promise<void> {
    return this.sim.close();
  }
}

export interface TestOperator {
  id: string;
  email: string;
  name: string;
  token: string;
}

export async function createOperator(client: Client, role: 'admin' | 'approver' | 'viewer'): Promise<TestOperator> {
  const email = `${role}-${randomUUID()}@operators.test`;
  const name = `Test ${role} ${email.slice(role.length + 1, role.length + 9)}`;
  const res = await client.post('/api/operators', { token: ADMIN_TOKEN, body: { email, name, role } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return { id: res.body.id, email, name, token: res.body.token };
}

/** The job as the API shows it now. */
export async function jobOf(client: Client, jobId: string) {
  const res = await client.get(`/api/jobs/${jobId}`, { token: ADMIN_TOKEN });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}

/** The delivery as operators see it (`GET /api/deliveries/{id}`). */
export async function deliveryOf(client: Client, jobId: string) {
  const res = await client.get(`/api/deliveries/${jobId}`, { token: ADMIN_TOKEN });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}

/** The ids listed under `GET /api/deliveries?status=`, every page. */
export async function deliveryIdsWithStatus(client: Client, status: string, token = ADMIN_TOKEN): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const query: string = `/api/deliveries?status=${status}&limit=500${cursor ? `&cursor=${cursor}` : ''}`;
    const res = await client.get(query, { token });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    for (const item of res.body.items) {
      expect(item.status).toBe(status);
      ids.push(item.id);
    }
    cursor = res.body.next_cursor;
  } while (cursor);
  return ids;
}

/** Reads a job's event stream until the server closes it. */
export function readJobEvents(baseUrl: string, jobId: string, token: string, timeoutMs = 30_000) {
  return readEventStream(`${baseUrl}/api/jobs/${jobId}/events`, token, timeoutMs);
}
