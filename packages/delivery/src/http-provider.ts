import { notFoundResponse, sendResponse, statusResponse, topUpsPath } from './protocol.ts';
import type { Provider, SendAnswer, StatusAnswer, TopUp } from './provider.ts';

export interface HttpProviderOptions {
  /** The provider's base URL; `/v1/topups` is appended. */
  url: string;
  apiKey: string;
  timeoutMs: number;
}

/** What came back from one call: a status and a parsed body, or why nothing usable came back. */
type Reply = { status: number; body: unknown } | { failure: string };

/**
 * The `PROVIDER=http` adapter (protocol.ts). It reads an answer as certain only when the provider
 * says so in a well-formed body about our reference: `declined` on a send, `failed` on a status.
 * Anything else that goes wrong (a timeout, a refused connection, a 5xx, a 429, a 401, HTML from a
 * proxy, an answer about another reference) is `unclear`: the top-up may have been delivered, so
 * the delivery stage asks again rather than refunding.
 */
export function createHttpProvider(options: HttpProviderOptions): Provider {
  const base = options.url.replace(/\/+$/, '');
  const headers = {
    authorization: `Bearer ${options.apiKey}`,
    'content-type': 'application/json',
    accept: 'application/json',
  };
  // Aborts calls in flight on close, so a shutdown never waits out their timeouts.
  const closing = new AbortController();

  async function call(method: 'GET' | 'POST', path: string, body?: string): Promise<Reply> {
    if (closing.signal.aborted) return { failure: 'provider closed' };
    try {
      const signal = AbortSignal.any([AbortSignal.timeout(options.timeoutMs), closing.signal]);
      const response = await fetch(`${base}${path}`, { method, headers, body, signal });
      // The timeout covers reading the body too: a provider that sends headers and stalls is a timeout.
      const text = await response.text();
      return { status: response.status, body: parseJson(text) };
    } catch (error) {
      return { failure: describeFailure(error) };
    }
  }

  return {
    name: 'http',

    async send(topUp: TopUp): Promise<SendAnswer> {
      const reply = await call(
        'POST',
        topUpsPath,
        JSON.stringify({
          reference: topUp.reference,
          phone_number: topUp.phoneNumber,
          amount: topUp.amount.toString(),
        }),
      );
      if ('failure' in reply) return unclear(reply.failure);
      if (!isSuccess(reply.status)) return unclear(describeStatus(reply));
      const parsed = sendResponse.safeParse(reply.body);
      if (!parsed.success) return unclear(`malformed answer: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
      const answer = parsed.data;
      if (answer.reference !== topUp.reference) return unclear(`answer about another reference: ${answer.reference}`);
      switch (answer.status) {
        case 'delivered':
          // "Delivered" with nothing to show for it breaks the protocol: not taken as certain.
          return answer.provider_reference
            ? { kind: 'delivered', providerReference: answer.provider_reference }
            : unclear('malformed answer: delivered without provider_reference');
        case 'pending':
          return { kind: 'pending', providerReference: answer.provider_reference ?? null };
        case 'declined':
          return { kind: 'declined', reason: answer.reason || 'declined' };
      }
    },

    async status(reference: string): Promise<StatusAnswer> {
      const reply = await call('GET', `${topUpsPath}/${encodeURIComponent(reference)}`);
      if ('failure' in reply) return unclear(reply.failure);
      // Only the provider's own "not found" body: a 404 from a wrong URL or a proxy says nothing.
      if (reply.status === 404 && notFoundResponse.safeParse(reply.body).success) return { kind: 'not_found' };
      if (!isSuccess(reply.status)) return unclear(describeStatus(reply));
      const parsed = statusResponse.safeParse(reply.body);
      if (!parsed.success) return unclear(`malformed answer: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
      const answer = parsed.data;
      if (answer.reference !== reference) return unclear(`answer about another reference: ${answer.reference}`);
      switch (answer.status) {
        case 'delivered':
          return answer.provider_reference
            ? { kind: 'delivered', providerReference: answer.provider_reference }
            : unclear('malformed answer: delivered without provider_reference');
        case 'pending':
          return { kind: 'pending' };
        case 'failed':
          return { kind: 'failed', reason: answer.reason || 'failed' };
      }
    },

    async close() {
      closing.abort();
    },
  };
}

const unclear = (detail: string) => ({ kind: 'unclear', detail }) as const;

const isSuccess = (status: number) => status >= 200 && status < 300;

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function describeStatus(reply: { status: number; body: unknown }): string {
  if (reply.status === 401) return 'http 401: the provider refused our key (PROVIDER_API_KEY)';
  return `http ${reply.status}`;
}

function describeFailure(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  if (error.name === 'TimeoutError') return 'timeout';
  if (error.name === 'AbortError') return 'provider closed';
  // fetch reports a refused or reset connection as "fetch failed", with the reason as its cause.
  const cause = error.cause as { code?: string; message?: string } | undefined;
  if (cause) return `connection error: ${cause.code ?? cause.message ?? 'unknown'}`;
  return error.message;
}
