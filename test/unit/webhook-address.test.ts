import type { LookupAddress } from 'node:dns';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type AddressRules,
  checkWebhookUrl,
  isPublicAddress,
  newWebhookSecret,
  nextAttemptAt,
  postWebhook,
  type Resolve,
  signatureHeaders,
} from '@cs/webhooks';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The rules of where a webhook may point (a seller chooses the URL, our worker makes the request),
 * the retry schedule and the signature, without a database. Names resolve through a table of the
 * test's own: the machine has no DNS of the internet.
 */

const development: AddressRules = { allowPrivate: false, production: false };
const production: AddressRules = { allowPrivate: false, production: true };
const allowPrivate: AddressRules = { allowPrivate: true, production: true };

const names: Record<string, string[]> = {
  localhost: ['127.0.0.1', '::1'],
  'hooks.shop.example': ['93.184.215.14', '2606:2800:21f:cb07:6820:80da:af6b:8b2c'],
  'inside.shop.example': ['10.20.30.40'],
  'half.shop.example': ['93.184.215.14', '192.168.1.10'],
  'mapped.shop.example': ['::ffff:127.0.0.1'],
  'metadata.shop.example': ['169.254.169.254'],
};
const resolve: Resolve = async (host) => {
  const addresses = names[host];
  if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return addresses.map((address): LookupAddress => ({ address, family: address.includes(':') ? 6 : 4 }));
};

async function problemOf(url: string, rules: AddressRules): Promise<string> {
  try {
    await checkWebhookUrl(url, rules, resolve);
    return 'allowed';
  } catch (err) {
    return (err as { problem?: string }).problem ?? `threw ${(err as Error).message}`;
  }
}

describe('webhook addresses', () => {
  it('tells public addresses from loopback, private, link-local, reserved and their IPv6 and mapped forms', () => {
    // biome-ignore format: a table
    const cases: Array<[string, boolean]> = [
      ['93.184.215.14', true], ['8.8.8.8', true], ['172.32.0.1', true], ['100.128.0.1', true],
      ['2606:4700::1111', true], ['::ffff:8.8.8.8', true], ['64:ff9b::808:808', true],
      ['127.0.0.1', false], ['127.255.255.254', false], ['0.0.0.0', false], ['10.0.0.1', false],
      ['172.16.0.1', false], ['172.31.255.255', false], ['192.168.0.1', false], ['100.64.0.1', false],
      ['169.254.169.254', false], ['192.0.2.1', false], ['198.18.0.1', false], ['224.0.0.1', false],
      ['255.255.255.255', false], ['::1', false], ['::', false], ['fc00::1', false], ['fd12:3456::1', false],
      ['fe80::1', false], ['ff02::1', false], ['2001:db8::1', false], ['::ffff:127.0.0.1', false],
      ['::ffff:7f00:1', false], ['::ffff:10.1.2.3', false], ['::127.0.0.1', false], ['64:ff9b::a00:1', false],
      ['2002:c0a8:101::1', false], ['not an address', false],
    ];
    for (const [address, expected] of cases) expect(isPublicAddress(address), address).toBe(expected);
  });

  it('refuses loopback and private hosts, by literal or by name, unless WEBHOOK_ALLOW_PRIVATE', async () => {
    for (const url of [
      'http://127.0.0.1:8080/hook',
      'http://127.1/hook',
      'http://2130706433/hook',
      'http://0x7f.0.0.1/hook',
      'http://[::1]/hook',
      'http://[::ffff:127.0.0.1]/hook',
      'http://localhost/hook',
      'http://inside.shop.example/hook',
      'http://mapped.shop.example/hook',
      'http://metadata.shop.example/latest/meta-data',
    ]) {
      expect(await problemOf(url, development), url).toBe('private_address');
      expect(await problemOf(url.replace('http:', 'https:'), production), url).toBe('private_address');
    }
    // One private address among public ones is enough: which one a connection takes is not ours to choose.
    expect(await problemOf('https://half.shop.example/hook', production)).toBe('private_address');
    expect(await problemOf('http://127.0.0.1:8080/hook', allowPrivate)).toBe('allowed');
    expect(await problemOf('http://inside.shop.example/hook', allowPrivate)).toBe('allowed');
  });

  it('requires https in production only, and allows http there with WEBHOOK_ALLOW_PRIVATE', async () => {
    expect(await problemOf('https://hooks.shop.example/charge-sales', production)).toBe('allowed');
    expect(await problemOf('http://hooks.shop.example/charge-sales', production)).toBe('https_required');
    expect(await problemOf('http://hooks.shop.example/charge-sales', development)).toBe('allowed');
    expect(await problemOf('http://hooks.shop.example/charge-sales', allowPrivate)).toBe('allowed');
  });

  it('refuses what is not an http(s) URL, credentials, a long URL and a name that does not resolve', async () => {
    expect(await problemOf('hooks.shop.example/charge-sales', development)).toBe('not_a_url');
    expect(await problemOf('', development)).toBe('not_a_url');
    expect(await problemOf('ftp://hooks.shop.example/x', development)).toBe('scheme');
    expect(await problemOf('file:///etc/passwd', allowPrivate)).toBe('scheme');
    expect(await problemOf('javascript:alert(1)', development)).toBe('scheme');
    expect(await problemOf('https://user:pass@hooks.shop.example/x', production)).toBe('credentials');
    expect(await problemOf('https://user@hooks.shop.example/x', allowPrivate)).toBe('credentials');
    expect(await problemOf(`https://hooks.shop.example/${'a'.repeat(2100)}`, production)).toBe('too_long');
    expect(await problemOf('https://nowhere.shop.example/x', production)).toBe('unresolvable');
    expect(await problemOf('https://nowhere.shop.example/x', allowPrivate)).toBe('unresolvable');
  });
});

describe('sending to an address', () => {
  let receiver: Server;
  let port: number;
  let posts = 0;
  beforeAll(async () => {
    receiver = createServer((req, res) => {
      posts++;
      req.resume();
      res.end('ok');
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    port = (receiver.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => receiver.close(() => r())));

  it('connects to a name only when what it resolves to now is allowed (DNS rebinding)', async () => {
    let rebound = false;
    // Public when the URL was set; loopback when the connection is made.
    const rebinding: Resolve = async () => [{ address: rebound ? '127.0.0.1' : '93.184.215.14', family: 4 }];
    const url = `http://rebind.shop.example:${port}/hook`;
    await expect(checkWebhookUrl(url, development, rebinding)).resolves.toBeInstanceOf(URL);
    rebound = true;
    const before = posts;
    const outcome = await postWebhook(
      { url, secret: newWebhookSecret() },
      { id: 'msg_1', body: '{}' },
      { rules: development, timeoutMs: 2000, resolve: rebinding },
    );
    expect(outcome.statusCode).toBeNull();
    expect(outcome.error).toMatch(/^address not allowed: .*127\.0\.0\.1/);
    expect(posts).toBe(before);

    const allowed = await postWebhook(
      { url, secret: newWebhookSecret() },
      { id: 'msg_1', body: '{}' },
      { rules: { ...development, allowPrivate: true }, timeoutMs: 2000, resolve: rebinding },
    );
    expect(allowed).toMatchObject({ statusCode: 200, error: null });
    expect(posts).toBe(before + 1);
  });

  it('never connects to a literal private address without WEBHOOK_ALLOW_PRIVATE', async () => {
    const before = posts;
    const outcome = await postWebhook(
      { url: `http://127.0.0.1:${port}/hook`, secret: newWebhookSecret() },
      { id: 'msg_2', body: '{}' },
      { rules: development, timeoutMs: 2000 },
    );
    expect(outcome).toMatchObject({ statusCode: null, error: expect.stringMatching(/^address not allowed/) });
    expect(posts).toBe(before);
  });
});

describe('webhook secrets and signatures', () => {
  it('makes whsec_ secrets of 32 random bytes, and signs the Standard Webhooks way', () => {
    const secret = newWebhookSecret();
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(secret.slice(6), 'base64')).toHaveLength(32);
    expect(newWebhookSecret()).not.toBe(secret);

    const body = JSON.stringify({ id: 'msg_x', type: 'credit_request.approved', data: {} });
    const headers = signatureHeaders(secret, 'msg_x', new Date(), body);
    expect(headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(newWebhookSecret()).verify(body, headers)).toThrow();
    expect(() => new Webhook(secret).verify(`${body} `, headers)).toThrow();
  });
});

describe('the retry schedule', () => {
  const schedule = { delaysMs: [2000, 25_000, 120_000], retryForMs: 24 * 3600_000 };
  const createdAt = new Date('2026-01-01T00:00:00Z');

  it('waits each delay in turn after each failure, then repeats the last one', () => {
    const now = new Date('2026-01-01T01:00:00Z');
    const waits = [1, 2, 3, 4, 9].map(
      (attempts) => (nextAttemptAt(schedule, { attempts, createdAt, now })?.getTime() ?? 0) - now.getTime(),
    );
    expect(waits).toEqual([2000, 25_000, 120_000, 120_000, 120_000]);
  });

  it('gives up once the next attempt would fall after created_at + WEBHOOK_RETRY_FOR', () => {
    const end = createdAt.getTime() + schedule.retryForMs;
    expect(nextAttemptAt(schedule, { attempts: 3, createdAt, now: new Date(end - 120_000) })).toEqual(new Date(end));
    expect(nextAttemptAt(schedule, { attempts: 3, createdAt, now: new Date(end - 119_999) })).toBeNull();
    expect(nextAttemptAt(schedule, { attempts: 1, createdAt, now: new Date(end + 1) })).toBeNull();
  });
});
