import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { System } from '../support/system.ts';

const METRICS_TOKEN = 'test-metrics-token-0123456789';

describe('GET /metrics with METRICS_TOKEN set', () => {
  let system: System;
  beforeAll(async () => {
    system = await System.start({ workers: 0, env: { METRICS_TOKEN } });
  });
  afterAll(() => system?.stop());

  it('needs that bearer token, and answers 401 with a JSON body without it', async () => {
    for (const authorization of [undefined, 'Bearer wrong-token-0123456789', `Basic ${METRICS_TOKEN}`]) {
      const res = await fetch(`${system.baseUrl}/metrics`, { headers: authorization ? { authorization } : {} });
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({ code: 'unauthorized' });
    }
    const res = await fetch(`${system.baseUrl}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toMatch(/^sellers_unreconciled \d+$/m);
    expect(text).toContain('http_request_duration_seconds');
  });

  it('reads the last background reconciliation instead of starting one per scrape', async () => {
    // The first run comes a few seconds after start; scrapes before and after it are equally fast
    // and never wait for a reconciliation.
    const deadline = Date.now() + 20_000;
    let reconciledAt = 0;
    while (reconciledAt === 0 && Date.now() < deadline) {
      const text = await (
        await fetch(`${system.baseUrl}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
      ).text();
      reconciledAt = Number(/^sellers_reconciled_timestamp_seconds (\S+)$/m.exec(text)?.[1] ?? 0);
      if (reconciledAt === 0) await new Promise((r) => setTimeout(r, 250));
    }
    expect(reconciledAt).toBeGreaterThan(Date.now() / 1000 - 60);
    // A burst of scrapes: still the same computation, none of them triggered another.
    const stamps = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const text = await (
          await fetch(`${system.baseUrl}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
        ).text();
        return Number(/^sellers_reconciled_timestamp_seconds (\S+)$/m.exec(text)?.[1] ?? 0);
      }),
    );
    expect(new Set(stamps)).toEqual(new Set([reconciledAt]));
  });
});
