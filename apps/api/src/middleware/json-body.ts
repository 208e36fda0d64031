import type { IncomingMessage } from 'node:http';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../context.ts';
import { ApiError } from '../errors.ts';

export const MAX_BODY_BYTES = 64 * 1024;

/**
 * `application/json`, with optional `name=value` parameters: exactly what the route validators
 * accept. Anything looser here would let through a body that they then refuse with an error of
 * their own instead of this middleware's 415.
 */
const jsonMediaType = /^application\/json(?:;\s*[a-zA-Z0-9-]+=[^;]+)*$/i;

/**
 * A JSON string, or a JSON number literal. An unterminated string runs to the end of the text
 * (such a body is refused anyway): were it allowed to fail, every later quote would start a new
 * attempt that scans to the end again, and a 64 KiB body of `\"` would hold the event loop for
 * seconds.
 */
const token = /"(?:[^"\\]|\\[\s\S])*"?|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

/**
 * Parses a JSON body once for every route. A number literal with a fraction or an exponent
 * (`4000.0`, `4e3`) is kept as the string of its source text: `JSON.parse` would silently turn
 * it into an integer, and money must be written as an integer to be accepted. The field's own
 * validation then refuses it and names the field.
 */
export function quoteNonIntegerNumbers(text: string): string {
  return text.replace(token, (t) => (t.startsWith('"') || !/[.eE]/.test(t) ? t : JSON.stringify(t)));
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

const tooLarge = () => new ApiError('payload_too_large', `The body is larger than ${MAX_BODY_BYTES} bytes`);

/**
 * Reads the body straight from Node's request, refusing it as soon as it passes the limit
 * (declared or, when chunked, counted). Going through the web `Request` instead builds a
 * `ReadableStream` per request, which cost a tenth of the API's CPU under load.
 */
function readBody(incoming: IncomingMessage): Promise<Buffer> {
  if (Number(incoming.headers['content-length']) > MAX_BODY_BYTES) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = (error?: unknown) => {
      incoming.off('data', onData).off('end', onEnd).off('error', cutShort).off('close', onClose);
      if (error) reject(error);
      else resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) settle(tooLarge());
      else chunks.push(chunk);
    };
    const onEnd = () => settle();
    const cutShort = () => settle(new ApiError('malformed_request', 'The request body ended early'));
    const onClose = () => (incoming.complete ? settle() : cutShort());
    incoming.on('data', onData).on('end', onEnd).on('error', cutShort).on('close', onClose);
  });
}

/**
 * The POSTs that take no body (a new key, token or webhook secret; ending sessions; retrying a
 * webhook delivery): an empty body is theirs with or without a Content-Type, as the contract says.
 */
const bodilessPost =
  /^\/api\/(?:sellers\/[^/]+\/(?:api-key|webhook\/secret)|operators\/[^/]+\/(?:token|sessions\/revoke)|webhook-deliveries\/[^/]+\/retry)\/?$/;

export const jsonBody = createMiddleware<AppEnv>(async (c, next) => {
  if (c.req.method !== 'POST' && c.req.method !== 'PATCH' && c.req.method !== 'PUT') return next();
  // The size comes first, as the body must be read (or refused) whatever else is wrong with it.
  const bytes = await readBody(c.env.incoming);
  if (bytes.length === 0 && c.req.method === 'POST' && bodilessPost.test(c.req.path)) return next();
  if (!jsonMediaType.test(c.req.header('content-type') ?? '')) {
    throw new ApiError('unsupported_media_type', 'The body must be JSON (Content-Type: application/json)');
  }
  let raw: string;
  try {
    // JSON travels as UTF-8; bytes that are not would otherwise be read as U+FFFD and stored
    // other than they were sent.
    raw = utf8.decode(bytes);
  } catch {
    throw new ApiError('invalid_json', 'The body is not valid UTF-8');
  }
  let body: unknown;
  try {
    // The text as sent must be JSON: quoting numbers first would turn `01.5`, which is not
    // JSON, into a string that is.
    body = JSON.parse(raw);
  } catch {
    throw new ApiError('invalid_json', 'The body is not valid JSON');
  }
  // No request has such a field. Copied into an ordinary object, as the list of offending
  // fields is, it would set that object's prototype instead of naming the field; copied by
  // any later code, it would do the same to that code's object. Deeper in the body it is only
  // part of a value, which no field of ours accepts as an object.
  if (typeof body === 'object' && body !== null && Object.hasOwn(body, '__proto__')) {
    throw new ApiError('validation_error', 'Invalid request: __proto__', {
      fields: Object.fromEntries([['__proto__', 'is not a field of this request']]),
    });
  }
  // The route validators read the body through c.req.json(), which parses Hono's cached text:
  // this text, and nothing else of the body is left for anyone to read.
  const cache = c.req.bodyCache as { text?: Promise<string> };
  cache.text = Promise.resolve(quoteNonIntegerNumbers(raw));
  await next();
});
