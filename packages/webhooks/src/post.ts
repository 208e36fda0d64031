import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Webhook } from 'standardwebhooks';
import { type AddressRules, checkWebhookUrlShape, guardedLookup, type Resolve, resolveAll } from './address.ts';

/**
 * The Standard Webhooks headers of one attempt: the event's id (the same on every attempt), the
 * time of this attempt in seconds, and `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed with
 * the secret's base64 part.
 */
export function signatureHeaders(secret: string, id: string, at: Date, body: string) {
  return {
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(id, at, body),
  };
}

/** What one attempt came to: the receiver's status, or why there was none. */
export interface PostOutcome {
  statusCode: number | null;
  error: string | null;
  durationMs: number;
}

export interface PostOptions {
  rules: AddressRules;
  timeoutMs: number;
  resolve?: Resolve;
}

/**
 * Posts one signed body to a receiver, once. It connects only to an address the rules allow,
 * checked when the connection is made (a literal IP here, a name in the lookup), follows no
 * redirect, and waits for the answer's status for at most `timeoutMs`; the answer's body is not
 * read. Never throws: every failure is an outcome to record.
 */
export function postWebhook(
  target: { url: string; secret: string },
  delivery: { id: string; body: string },
  options: PostOptions,
): Promise<PostOutcome> {
  const started = performance.now();
  const done = (statusCode: number | null, error: string | null): PostOutcome => ({
    statusCode,
    error,
    durationMs: Math.round(performance.now() - started),
  });
  let url: URL;
  try {
    url = checkWebhookUrlShape(target.url, options.rules);
  } catch (err) {
    return Promise.resolve(done(null, `address not allowed: ${(err as Error).message}`));
  }
  const headers = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(delivery.body)),
    'user-agent': 'charge-sales-webhooks/1',
    ...signatureHeaders(target.secret, delivery.id, new Date(), delivery.body),
  };
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve) => {
    const signal = AbortSignal.timeout(options.timeoutMs);
    const req = send(url, {
      method: 'POST',
      headers,
      signal,
      // A connection of its own each time, made through the guarded lookup: a pooled socket would
      // skip the check for the connection's lifetime.
      agent: false,
      lookup: guardedLookup(options.rules, options.resolve ?? resolveAll) as never,
    });
    req.once('response', (res) => {
      resolve(done(res.statusCode ?? null, null));
      res.destroy();
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (signal.aborted) resolve(done(null, `timeout: no answer within ${options.timeoutMs} ms`));
      else if (err.code === 'EWEBHOOKADDRESS') resolve(done(null, `address not allowed: ${err.message}`));
      else resolve(done(null, err.code ? `${err.code}: ${err.message}` : err.message));
    });
    req.end(delivery.body);
  });
}
