import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';

/**
 * Where a seller's webhook may point. A webhook is a request our worker makes on a seller's
 * say-so, so without these rules any seller could make it call the database, Redis, a cloud's
 * metadata service or anything else on our own network (server-side request forgery).
 */
export interface AddressRules {
  /** WEBHOOK_ALLOW_PRIVATE: private and loopback addresses, and plain http, are allowed (tests, closed networks). */
  allowPrivate: boolean;
  /** NODE_ENV=production: `https` only, unless allowPrivate. */
  production: boolean;
}

export const MAX_WEBHOOK_URL_LENGTH = 2048;

/** Why a URL was refused: a closed set, so the API and the attempts' log say it the same way. */
export type AddressProblem =
  | 'not_a_url'
  | 'too_long'
  | 'scheme'
  | 'https_required'
  | 'credentials'
  | 'private_address'
  | 'unresolvable';

export class WebhookAddressError extends Error {
  constructor(
    readonly problem: AddressProblem,
    message: string,
  ) {
    super(message);
    this.name = 'WebhookAddressError';
  }
}

/**
 * Every range that is not the public internet: "this network", private, shared (carrier-grade
 * NAT), loopback, link-local (cloud metadata lives at 169.254.169.254), the documentation and
 * benchmarking ranges, multicast and reserved; and their IPv6 counterparts. IPv4-mapped IPv6
 * addresses (`::ffff:127.0.0.1`) are checked as the IPv4 address they carry, and the IPv6 forms
 * that embed an IPv4 address (NAT64, 6to4, the deprecated compatible form) as that address too.
 */
const nonPublic = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  nonPublic.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['100::', 64],
  ['2001::', 32],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  nonPublic.addSubnet(network, prefix, 'ipv6');
}

/** The 16 bytes of an IPv6 address, `::` and an embedded dotted IPv4 tail included. */
function ipv6Bytes(address: string): Uint8Array | null {
  let text = address.split('%')[0] ?? '';
  const bytes = new Uint8Array(16);
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  let tail: number[] = [];
  if (dotted?.[1]) {
    tail = dotted[1].split('.').map(Number);
    text = `${text.slice(0, -dotted[1].length)}0:0`;
  }
  const [head = '', rest] = text.split('::');
  const left = head ? head.split(':') : [];
  const right = rest ? rest.split(':') : [];
  const groups = rest === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  if (groups.length !== 8) return null;
  groups.forEach((group, i) => {
    const value = Number.parseInt(group, 16);
    bytes[i * 2] = value >> 8;
    bytes[i * 2 + 1] = value & 0xff;
  });
  if (tail.length === 4) bytes.set(tail, 12);
  return bytes;
}

/** The IPv4 address an IPv6 address stands for, when it embeds one; else null. */
function embeddedIpv4(address: string): string | null {
  const b = ipv6Bytes(address);
  if (!b) return null;
  const zeros = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  const v4 = (at: number) => `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
  if (zeros(0, 10) && ((b[10] === 0xff && b[11] === 0xff) || (b[10] === 0 && b[11] === 0 && !zeros(12, 16))))
    return v4(12);
  // 64:ff9b::a.b.c.d (NAT64) carries it in its last four bytes.
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) return v4(12);
  // 2002:AABB:CCDD::/48 (6to4) carries it in bytes 2 to 5.
  if (b[0] === 0x20 && b[1] === 0x02) return v4(2);
  return null;
}

/** True when an IP address (v4 or v6) is on the public internet. Anything unparsable is not. */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return !nonPublic.check(address, 'ipv4');
  if (family !== 6) return false;
  const v4 = embeddedIpv4(address);
  if (v4 !== null) return isPublicAddress(v4);
  return !nonPublic.check(address, 'ipv6');
}

/** A URL's host as an IP address, brackets of an IPv6 literal removed; null for a name. */
export function literalAddress(url: URL): string | null {
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return isIP(host) ? host : null;
}

/**
 * What can be told from the text alone: a URL of http or https, no credentials, not too long,
 * https in production (unless private addresses are allowed), and an IP literal that is public.
 * Throws WebhookAddressError; returns the parsed URL.
 */
export function checkWebhookUrlShape(text: string, rules: AddressRules): URL {
  if (text.length > MAX_WEBHOOK_URL_LENGTH)
    throw new WebhookAddressError('too_long', `The URL is longer than ${MAX_WEBHOOK_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new WebhookAddressError('not_a_url', 'Not an absolute URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new WebhookAddressError('scheme', 'The URL must be http or https');
  if (url.protocol === 'http:' && rules.production && !rules.allowPrivate)
    throw new WebhookAddressError('https_required', 'The URL must be https');
  if (url.username || url.password)
    throw new WebhookAddressError('credentials', 'The URL must not carry a user name or password');
  if (!url.hostname) throw new WebhookAddressError('not_a_url', 'The URL has no host');
  const literal = literalAddress(url);
  if (literal !== null && !rules.allowPrivate && !isPublicAddress(literal))
    throw new WebhookAddressError('private_address', `${literal} is a loopback, private or reserved address`);
  return url;
}

/** Resolves a host name to all its addresses, as the operating system does for a connection. */
export type Resolve = (host: string) => Promise<LookupAddress[]>;

const RESOLVE_TIMEOUT_MS = 5000;

export const resolveAll: Resolve = (host) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`resolving ${host} took longer than ${RESOLVE_TIMEOUT_MS} ms`)),
      RESOLVE_TIMEOUT_MS,
    );
    dnsLookup(host, { all: true, verbatim: true }, (err, addresses) => {
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(addresses);
    });
  });

/** Refuses a set of addresses unless every one is public (or private ones are allowed). */
export function checkResolved(host: string, addresses: readonly LookupAddress[], rules: AddressRules): void {
  if (addresses.length === 0) throw new WebhookAddressError('unresolvable', `${host} has no address`);
  if (rules.allowPrivate) return;
  const refused = addresses.find((a) => !isPublicAddress(a.address));
  if (refused)
    throw new WebhookAddressError(
      'private_address',
      `${host} resolves to ${refused.address}, a loopback, private or reserved address`,
    );
}

/**
 * The whole check of a URL a seller sets: its shape, then its host resolved, and every address it
 * resolves to must be public. A name that resolves to one public and one private address is
 * refused: which one a connection would use is not ours to choose.
 */
export async function checkWebhookUrl(text: string, rules: AddressRules, resolve: Resolve = resolveAll): Promise<URL> {
  const url = checkWebhookUrlShape(text, rules);
  if (literalAddress(url) !== null) return url;
  let addresses: LookupAddress[];
  try {
    addresses = await resolve(url.hostname);
  } catch (err) {
    throw new WebhookAddressError('unresolvable', `${url.hostname} does not resolve (${(err as Error).message})`);
  }
  checkResolved(url.hostname, addresses, rules);
  return url;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for `http.request` that connects only to addresses the rules allow: the name is
 * resolved again for the connection itself and checked then, so a name that resolved to a public
 * address when it was set and to a private one now (DNS rebinding) is still refused.
 */
export function guardedLookup(rules: AddressRules, resolve: Resolve = resolveAll) {
  return (hostname: string, options: { all?: boolean } | number, callback: LookupCallback): void => {
    const all = typeof options === 'object' && options.all === true;
    resolve(hostname).then(
      (addresses) => {
        try {
          checkResolved(hostname, addresses, rules);
        } catch (err) {
          callback(Object.assign(err as Error, { code: 'EWEBHOOKADDRESS' }), all ? [] : '', 0);
          return;
        }
        if (all) callback(null, addresses);
        else callback(null, addresses[0]?.address ?? '', addresses[0]?.family ?? 4);
      },
      (err: NodeJS.ErrnoException) => callback(err, all ? [] : '', 0),
    );
  };
}
