import { isPlaceholderSecret, loadConfig, PRODUCTION_ADMIN_TOKEN_MIN } from '@cs/config';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const ADMIN = 'a3f1c9e07b5d4e2f8a6c1b9d0e7f3a2c'; // 32 characters, random-looking
const LEDGER = '5e8b2d7f1a9c4e6b0d3f8a2c7e1b9d4f'; // 32 characters
const fail = (line: string): never => {
  throw new Error(line);
};
const load = (env: Record<string, string>, options: { needsAdminToken?: boolean; needsLedgerKey?: boolean } = {}) =>
  loadConfig({ env, fail, ...options });
const production = (env: Record<string, string> = {}) => ({
  NODE_ENV: 'production',
  ADMIN_TOKEN: ADMIN,
  LEDGER_HMAC_KEY: LEDGER,
  ...env,
});
const without = (env: Record<string, string>, name: string) =>
  Object.fromEntries(Object.entries(env).filter(([k]) => k !== name));

describe('isPlaceholderSecret', () => {
  it.each([
    'replace-with-a-random-token-of-32-or-more-characters',
    'replace-with-a-random-key-of-32-or-more-characters',
    'change-me-to-a-long-random-token',
    'CHANGEME-0123456789abcdef0123456789abcdef',
    'please_change_me_0123456789abcdef0123456789',
    'replace me with something long enough, really',
    'this-is-a-placeholder-value-of-some-length',
    'example-token-0123456789abcdef0123456789abcdef',
    'your-token-here-0123456789abcdef0123456789',
  ])('recognises %s', (secret) => {
    expect(isPlaceholderSecret(secret)).toBe(true);
  });

  it.each([ADMIN, LEDGER, 'dev-Zm9vYmFyYmF6cXV4cXV1eA', 'k7PqX2mW9vR4tY8nB3cF6hJ1'])('lets %s through', (secret) => {
    expect(isPlaceholderSecret(secret)).toBe(false);
  });
});

describe('loadConfig', () => {
  let stderr: ReturnType<typeof vi.spyOn>;
  beforeEach(() => {
    stderr = vi.spyOn(console, 'error').mockImplementation(() => {});
  });
  afterEach(() => {
    stderr.mockRestore();
  });

  describe('in production', () => {
    it('starts with a long admin token and a ledger key of its own, and keeps them', () => {
      const config = load(production());
      expect(config).toMatchObject({ NODE_ENV: 'production', ADMIN_TOKEN: ADMIN, LEDGER_HMAC_KEY: LEDGER });
      expect(stderr).not.toHaveBeenCalled();
    });

    it('refuses to start without ADMIN_TOKEN', () => {
      expect(() => load(without(production(), 'ADMIN_TOKEN'))).toThrow('config: ADMIN_TOKEN is required in production');
    });

    it('refuses an ADMIN_TOKEN shorter than 32 characters', () => {
      expect(PRODUCTION_ADMIN_TOKEN_MIN).toBe(32);
      expect(() => load(production({ ADMIN_TOKEN: ADMIN.slice(0, 31) }))).toThrow(
        'config: ADMIN_TOKEN must be at least 32 characters in production',
      );
      // Shorter than 16 is refused everywhere, by the schema.
      expect(() => load(production({ ADMIN_TOKEN: 'short' }))).toThrow(
        'config: ADMIN_TOKEN: ADMIN_TOKEN must be at least 16 characters',
      );
    });

    it('accepts an ADMIN_TOKEN of exactly 32 characters', () => {
      expect(load(production({ ADMIN_TOKEN: ADMIN.slice(0, 32) })).ADMIN_TOKEN).toBe(ADMIN);
    });

    it.each([
      'replace-with-a-random-token-of-32-or-more-characters',
      'change-me-to-a-long-random-token',
      'example-admin-token-0123456789abcdef0123',
    ])('refuses the placeholder ADMIN_TOKEN %s', (token) => {
      expect(() => load(production({ ADMIN_TOKEN: token }))).toThrow(
        'config: ADMIN_TOKEN is a placeholder from the documentation; generate one (openssl rand -hex 32)',
      );
    });

    it('refuses to start without LEDGER_HMAC_KEY', () => {
      expect(() => load(without(production(), 'LEDGER_HMAC_KEY'))).toThrow(
        'config: LEDGER_HMAC_KEY is required in production (32 characters or more)',
      );
      expect(() => load(production({ LEDGER_HMAC_KEY: '' }))).toThrow(/LEDGER_HMAC_KEY/);
    });

    it('refuses a LEDGER_HMAC_KEY shorter than 32 characters', () => {
      expect(() => load(production({ LEDGER_HMAC_KEY: LEDGER.slice(0, 31) }))).toThrow(
        'config: LEDGER_HMAC_KEY: LEDGER_HMAC_KEY must be at least 32 characters',
      );
    });

    it('accepts a placeholder LEDGER_HMAC_KEY of the right length, with a warning', () => {
      const key = 'replace-with-a-random-key-of-32-or-more-characters';
      expect(load(production({ LEDGER_HMAC_KEY: key })).LEDGER_HMAC_KEY).toBe(key);
      expect(stderr).toHaveBeenCalledWith(expect.stringContaining('LEDGER_HMAC_KEY is a placeholder'));
    });

    it('lets a process that needs neither (migrations, tools) start without them', () => {
      const config = load({ NODE_ENV: 'production' }, { needsAdminToken: false, needsLedgerKey: false });
      expect(config.ADMIN_TOKEN).toBe('');
      expect(config.LEDGER_HMAC_KEY.length).toBeGreaterThanOrEqual(32);
    });

    it('still needs the ledger key in a process that needs no admin token', () => {
      expect(() => load(without(production(), 'ADMIN_TOKEN'), { needsAdminToken: false })).not.toThrow();
      expect(() => load({ NODE_ENV: 'production' }, { needsAdminToken: false })).toThrow(
        'config: LEDGER_HMAC_KEY is required in production (32 characters or more)',
      );
    });
  });

  describe('in development and tests', () => {
    for (const NODE_ENV of ['development', 'test']) {
      it(`${NODE_ENV}: generates an admin token and uses the development ledger key when none is given`, () => {
        const config = load({ NODE_ENV });
        expect(config.ADMIN_TOKEN).toMatch(/^dev-[A-Za-z0-9_-]{24}$/);
        expect(config.LEDGER_HMAC_KEY.length).toBeGreaterThanOrEqual(32);
        expect(stderr).toHaveBeenCalledWith(expect.stringContaining(config.ADMIN_TOKEN));
        // A fresh token every start: nobody can guess it from the source.
        expect(load({ NODE_ENV }).ADMIN_TOKEN).not.toBe(config.ADMIN_TOKEN);
      });

      it(`${NODE_ENV}: accepts a short or placeholder admin token`, () => {
        expect(load({ NODE_ENV, ADMIN_TOKEN: 'sixteen-chars-ok' }).ADMIN_TOKEN).toBe('sixteen-chars-ok');
        expect(load({ NODE_ENV, ADMIN_TOKEN: 'change-me-to-a-long-random-token' }).ADMIN_TOKEN).toBe(
          'change-me-to-a-long-random-token',
        );
      });
    }

    it('defaults to development', () => {
      expect(load({}).NODE_ENV).toBe('development');
    });

    it('still refuses an admin token under 16 characters and a ledger key under 32', () => {
      expect(() => load({ ADMIN_TOKEN: 'short' })).toThrow('config: ADMIN_TOKEN:');
      expect(() => load({ LEDGER_HMAC_KEY: 'short' })).toThrow('config: LEDGER_HMAC_KEY:');
    });

    it('keeps a ledger key it is given', () => {
      expect(load({ LEDGER_HMAC_KEY: LEDGER }).LEDGER_HMAC_KEY).toBe(LEDGER);
    });
  });

  describe('DATABASE_PREPARE', () => {
    it('defaults to true: named prepared statements', () => {
      expect(load({}).DATABASE_PREPARE).toBe(true);
      expect(load(production()).DATABASE_PREPARE).toBe(true);
    });

    it('is false only when set to false (behind PgBouncer in transaction mode), true when set to true', () => {
      expect(load({ DATABASE_PREPARE: 'false' }).DATABASE_PREPARE).toBe(false);
      expect(load(production({ DATABASE_PREPARE: 'false' })).DATABASE_PREPARE).toBe(false);
      expect(load({ DATABASE_PREPARE: 'true' }).DATABASE_PREPARE).toBe(true);
    });

    it.each(['0', 'no', 'FALSE', 'off', 'yes'])('refuses %j in one line rather than guess', (value) => {
      expect(() => load({ DATABASE_PREPARE: value })).toThrow(
        'config: DATABASE_PREPARE: DATABASE_PREPARE must be true or false',
      );
    });
  });

  describe('the limits on abuse', () => {
    it('default to 100 sales a second per seller, 20 failed authentications a minute, 20 streams of 5 minutes', () => {
      expect(load({})).toMatchObject({
        SELLER_RATE_LIMIT: 100,
        AUTH_FAILURE_LIMIT: 20,
        AUTH_FAILURE_WINDOW_SECONDS: 60,
        EVENT_STREAMS_PER_CALLER: 20,
        EVENT_STREAM_MAX_SECONDS: 300,
      });
    });

    it('take 0 as no sales limit, and whole numbers for the others', () => {
      const config = load({
        SELLER_RATE_LIMIT: '0',
        AUTH_FAILURE_LIMIT: '5',
        AUTH_FAILURE_WINDOW_SECONDS: '3',
        EVENT_STREAMS_PER_CALLER: '2',
        EVENT_STREAM_MAX_SECONDS: '4',
      });
      expect(config).toMatchObject({
        SELLER_RATE_LIMIT: 0,
        AUTH_FAILURE_LIMIT: 5,
        AUTH_FAILURE_WINDOW_SECONDS: 3,
        EVENT_STREAMS_PER_CALLER: 2,
        EVENT_STREAM_MAX_SECONDS: 4,
      });
    });

    it.each([
      ['SELLER_RATE_LIMIT', '-1'],
      ['SELLER_RATE_LIMIT', '2.5'],
      ['AUTH_FAILURE_LIMIT', '0'],
      ['AUTH_FAILURE_WINDOW_SECONDS', '0'],
      ['EVENT_STREAMS_PER_CALLER', '0'],
      ['EVENT_STREAM_MAX_SECONDS', 'forever'],
    ])('refuses %s=%s in one line', (name, value) => {
      expect(() => load({ [name]: value })).toThrow(new RegExp(`^config: ${name}: `));
    });
  });

  it('takes an empty variable as unset, as "VAR=" in an env file means', () => {
    const config = load({ METRICS_TOKEN: '', DATABASE_PREPARE: '', PORT: '' });
    expect(config.METRICS_TOKEN).toBeUndefined();
    expect(config).toMatchObject({ DATABASE_PREPARE: true, PORT: 3000 });
    expect(() => load({ METRICS_TOKEN: 'short' })).toThrow(/^config: METRICS_TOKEN: /);
  });

  it('names the variable of a value that does not parse, in one line', () => {
    expect(() => load({ PORT: 'eighty' })).toThrow(/^config: PORT: /);
    expect(() => load({ NODE_ENV: 'staging' })).toThrow(/^config: NODE_ENV: /);
  });
});
