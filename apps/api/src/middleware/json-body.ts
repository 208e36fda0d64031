import { bodyLimit } from 'hono/body-limit';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../context.ts';
import { ApiError } from '../errors.ts';

export const MAX_BODY_BYTES = 64 * 1024;

/** A JSON string, or a JSON number literal. */
const token = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

/**
 * Parses a JSON body once for every route. A number literal with a fraction or an exponent
 * (`4000.0`, `4e3`) is kept as the string of its source text: `JSON.parse` would silently turn
 * it into an integer, and money must be written as an integer to be accepted. The field's own
 * validation then refuses it and names the field.
 */
export function quoteNonIntegerNumbers(text: string): string {
  return text.replace(token, (t) => (t.startsWith('"') || !/[.eE]/.test(t) ? t : JSON.stringify(t)));
}

const limit = bodyLimit({
  maxSize: MAX_BODY_BYTES,
  onError: () => {
    throw new ApiError('payload_too_large', `The body is larger than ${MAX_BODY_BYTES} bytes`);
  },
});

export const jsonBody = createMiddleware<AppEnv>(async (c, next) => {
  if (c.req.method !== 'POST' && c.req.method !== 'PATCH' && c.req.method !== 'PUT') return next();
  return limit(c, async () => {
    const type = c.req.header('content-type') ?? '';
    if (!/^application\/json\s*(;|$)/i.test(type)) {
      throw new ApiError('unsupported_media_type', 'The body must be JSON (Content-Type: application/json)');
    }
    const text = quoteNonIntegerNumbers(await c.req.text());
    try {
      JSON.parse(text);
    } catch {
      throw new ApiError('invalid_json', 'The body is not valid JSON');
    }
    // The route validators read the body through c.req.json(), which parses Hono's cached text.
    (c.req.bodyCache as { text?: Promise<string> }).text = Promise.resolve(text);
    await next();
  });
});
