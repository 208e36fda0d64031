import { isIPv6 } from 'node:net';
import type { RedisClient } from '@cs/queue';
import type { Logger } from 'pino';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { rateLimited } from '../errors.ts';
import { clientAddress } from './client-address.ts';

/** What a guard needs of a request's context, the API's or the operator pages'. */
interface RequestContext {
  env: unknown;
  var: { logger: Logger };
}

export interface AuthFailureLimits {
  /** Failed authentications an address may make within the window. */
  limit: number;
  /** The window they are counted in, and how long an address past the limit is refused, in seconds. */
  windowSeconds: number;
}

/**
 * Backoff after failed authentications, per client address, shared by every API process through
 * Redis. A token that matches nothing counts; no token at all does not (it guesses nothing). Past
 * `limit` failures within the window, the address is refused with 429 for the window's length,
 * whatever it sends, a valid token included: guessing tokens then costs a minute per 20 guesses,
 * and a guess that happens to be right cannot be told from a wrong one during the refusal.
 *
 * Failures are counted by `rate-limiter-flexible` (one atomic script per failure). The refusal is
 * a key of its own, set when the count goes past the limit and expiring with the refusal, so that
 * every request, on the hot path of every sale, costs one plain `PTTL` rather than the library's
 * read of its counter (a MULTI of two commands, three times the CPU in the API process).
 *
 * The address is the connection's peer. Behind a proxy or a load balancer that is the proxy, so
 * every client behind it shares one count: have the proxy limit by the client's own address.
 *
 * While Redis cannot be reached, each process counts and refuses on its own, in memory (the
 * library's insurance limiter): reads and sign-ins keep working, and guessing stays bounded.
 */
export class AuthFailures {
  private readonly counter: RateLimiterRedis;
  /** This process's own count, used while Redis cannot be reached. */
  private readonly inMemory: RateLimiterMemory;
  private readonly refusedPrefix: string;
  private readonly windowMs: number;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
    private readonly limits: AuthFailureLimits,
  ) {
    const counting = {
      points: limits.limit,
      duration: limits.windowSeconds,
      // The failure that goes past the limit holds the address for a whole window from then.
      blockDuration: limits.windowSeconds,
    };
    this.inMemory = new RateLimiterMemory({ ...counting, keyPrefix: 'auth-failures' });
    this.counter = new RateLimiterRedis({
      ...counting,
      storeClient: redis,
      keyPrefix: `${prefix}:auth-failures`,
      insuranceLimiter: this.inMemory,
    });
    this.refusedPrefix = `${prefix}:auth-refused:`;
    this.windowMs = limits.windowSeconds * 1000;
  }

  /**
   * Runs `identify` for a request unless its address is being refused (429), and counts a
   * `token` it does not recognise. Returns what `identify` returned.
   */
  async guard<T>(c: RequestContext, token: string | undefined, identify: () => Promise<T | null>): Promise<T | null> {
    const address = addressKey(clientAddress(c) ?? 'unknown');
    const refusedForMs = await this.refusedFor(address);
    if (refusedForMs > 0) {
      c.var.logger.warn({ address }, 'refused: too many failed authentications from this address');
      throw this.refusal(refusedForMs);
    }
    const caller = await identify();
    if (caller !== null || token === undefined) return caller;
    const counted = await this.counter.consume(address).catch((refused: unknown) => refused);
    if (!(counted instanceof RateLimiterRes)) throw counted;
    if (counted.consumedPoints <= this.limits.limit) return null;
    // NX: the refusal runs from the failure that went past the limit, not from later ones.
    await this.redis.set(this.refusedPrefix + address, '1', 'PX', this.windowMs, 'NX').catch(() => {
      // Redis unreachable: the in-memory count refuses the address in this process.
    });
    c.var.logger.warn(
      { address, failures: counted.consumedPoints, windowSeconds: this.limits.windowSeconds },
      'failed authentication past the limit: the address is refused for a window',
    );
    throw this.refusal(this.windowMs);
  }

  /** How long the address is still refused, in ms; 0 when it is not. */
  private async refusedFor(address: string): Promise<number> {
    try {
      const ms = await this.redis.pttl(this.refusedPrefix + address);
      // -2: no such key; -1 (a key without expiry, which is never written) counts as a whole window.
      return ms === -1 ? this.windowMs : Math.max(ms, 0);
    } catch {
      const state = await this.inMemory.get(address);
      return state && state.consumedPoints > this.limits.limit ? Math.max(state.msBeforeNext, 1) : 0;
    }
  }

  private refusal(waitMs: number) {
    return rateLimited('Too many failed authentications from this address; retry later', waitMs);
  }
}

/**
 * The key an address is counted under: an IPv4 address as itself (also when it arrives mapped into
 * IPv6, `::ffff:10.0.0.1`), an IPv6 address by its /64, which is what one host is commonly given
 * and may take any address of.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped?.[1]) return mapped[1];
  if (!isIPv6(address.split('%')[0] ?? '')) return address;
  return `${ipv6Groups(address).slice(0, 4).join(':')}::/64`;
}

/** The eight groups of an IPv6 address, `::` expanded, in lower case without leading zeros. */
function ipv6Groups(address: string): string[] {
  const [head = '', tail] = (address.split('%')[0] ?? '').split('::');
  const parts = (text: string) => (text ? text.split(':') : []);
  // A dotted IPv4 ending stands for the last two groups.
  const width = (groups: string[]) => groups.length + (groups.at(-1)?.includes('.') ? 1 : 0);
  const left = parts(head);
  const right = tail === undefined ? [] : parts(tail);
  const zeros = tail === undefined ? [] : Array<string>(8 - width(left) - width(right)).fill('0');
  return [...left, ...zeros, ...right].map((group) => group.toLowerCase().replace(/^0+(?=.)/, ''));
}
