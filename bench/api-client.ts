import { setTimeout as sleep } from 'node:timers/promises';

/**
 * One call to the product's API, for the setup and the checks. A 503 is the contract's "a
 * dependency is unavailable, nothing was done, retry later" (on a shared PostgreSQL: too many
 * clients for a moment), so it is retried; every other answer is the caller's to judge.
 */
export async function callApi<T>(
  apiUrl: string,
  method: string,
  path: string,
  token: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  for (let attempt = 1; ; attempt++) {
    const res = await fetch(`${apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = { status: res.status, body: (await res.json()) as T };
    if (res.status !== 503 || attempt >= 30) return answer;
    await sleep(Math.min(250 * attempt, 2000));
  }
}
