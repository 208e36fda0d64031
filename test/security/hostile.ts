import { request as httpRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import type postgres from 'postgres';
import { expect } from 'vitest';
import type { Answer } from '../support/http.ts';

/**
 * Hostile inputs for the HTTP contract, as fast-check arbitraries, and what every refusal must
 * look like. Bodies are built as raw JSON text so that literals `JSON.stringify` could never
 * write (`4e3`, `4000.0`, `1e400`) reach the API exactly as an attacker would send them.
 */

type Sql = postgres.Sql<{ bigint: bigint }>;

export const MAX_AMOUNT = 10n ** 12n;
export const MAX_BODY_BYTES = 64 * 1024;
const BIGINT_MAX = 2n ** 63n - 1n;

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const iranMobile = /^(?:\+98|98|0)9[0-9]{9}$/;
const json = (value: unknown) => JSON.stringify(value);
export const b64 = (text: string) => Buffer.from(text).toString('base64url');

// ---------------------------------------------------------------------------------------------
// The database, before and after

/** What bad input must never change: counts and sums over every table that holds money or requests. */
export async function dbSnapshot(sql: Sql) {
  const [row] = await sql`
    select
      (select count(*) from sellers) as sellers,
      (select count(*) from sellers where is_active) as active_sellers,
      (select coalesce(sum(credit_balance), 0) from sellers) as balance_sum,
      (select count(*) from transactions) as ledger_rows,
      (select coalesce(sum(amount), 0) from transactions) as ledger_sum,
      (select count(*) from jobs) as jobs,
      (select count(*) from credit_requests) as credit_requests,
      (select count(*) from credit_requests where status <> 'pending') as processed_requests,
      (select count(*) from phone_numbers) as phone_numbers`;
  return row;
}

/** Waits until no job anywhere is unfinished, so that the snapshot only moves if a request moves it. */
export async function waitForQuiet(sql: Sql, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [row] = await sql`select count(*)::int as n from jobs where status in ('queued', 'processing')`;
    if (row?.n === 0) return;
    if (Date.now() > deadline) throw new Error(`${row?.n} jobs still unfinished after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * Sends a body over its own connection and returns the answer as soon as it arrives, even while
 * the body is still being written. A server refuses an oversized body before reading it all and
 * then closes the connection; fetch reports that as a failure and loses the answer, where a
 * client that reads early answers (curl, browsers) shows the 413.
 */
export function sendEarlyAnswered(
  baseUrl: string,
  path: string,
  options: { method: string; headers: Record<string, string>; chunks: Uint8Array[]; length?: boolean },
): Promise<Answer> {
  const total = options.chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${baseUrl}${path}`, {
      method: options.method,
      agent: false,
      headers: { ...options.headers, ...(options.length === false ? {} : { 'content-length': String(total) }) },
    });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      const parts: Buffer[] = [];
      res.on('data', (part: Buffer) => parts.push(part));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {}
        resolve({ status: res.statusCode ?? 0, body, headers: new Headers(res.headers as Record<string, string>) });
        req.destroy();
      });
    });
    // Writing into a connection the server closed after answering is expected; before answering it is a failure.
    req.on('error', (error) => {
      if (!answered) reject(error);
    });
    for (const chunk of options.chunks) req.write(chunk);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------
// What a refusal looks like

export const snakeCase = /^[a-z]+(?:_[a-z]+)*$/;

/** The contract's error: the status asked for, `{error: string, code: snake_case}`, and the code when given. */
export function expectRefused(res: Answer, status: number, code?: string): void {
  const context = JSON.stringify(res.body)?.slice(0, 500);
  expect(res.status, context).toBe(status);
  expect(typeof res.body?.error, context).toBe('string');
  expect(res.body.error.length, context).toBeGreaterThan(0);
  expect(res.body.code, context).toMatch(snakeCase);
  if (code) expect(res.body.code, context).toBe(code);
}

/** A 400 that names, in `fields`, every one of `mustName` and nothing outside `mayName`. */
export function expectFieldsNamed(res: Answer, mustName: readonly string[], mayName = mustName): void {
  expectRefused(res, 400, 'validation_error');
  const named = Object.keys(res.body.fields ?? {});
  const context = JSON.stringify(res.body).slice(0, 500);
  expect(named.length, context).toBeGreaterThan(0);
  expect(named, context).toEqual(expect.arrayContaining([...mustName]));
  for (const field of named) expect(mayName, context).toContain(field);
}

// ---------------------------------------------------------------------------------------------
// Values the contract refuses, as raw JSON text

/** True when the contract accepts this JSON text as an amount: a JSON integer or a string of digits, 1 to 10^12. */
export function isValidAmountJson(text: string): boolean {
  const digits = /^[1-9][0-9]*$/.test(text) ? text : /^"([0-9]+)"$/.exec(text)?.[1];
  if (digits === undefined || digits.length > 20) return false;
  const value = BigInt(digits);
  return value >= 1n && value <= MAX_AMOUNT;
}

const nonDigitDigits = ['۰۱۲۳۴۵۶۷۸۹', '٠١٢٣٤٥٦٧٨٩', '０１２３４５６７８９'];
/** `digits` written with Persian, Arabic-Indic or full-width digits in place of ASCII ones. */
const foreignDigits = (digits: string) =>
  fc.constantFrom(...nonDigitDigits).chain((set) =>
    fc
      .array(fc.boolean(), { minLength: digits.length, maxLength: digits.length })
      .filter((replace) => replace.some(Boolean))
      .map((replace) =>
        [...digits].map((d, i) => (replace[i] && /[0-9]/.test(d) ? (set[Number(d)] ?? d) : d)).join(''),
      ),
  );

const wrongTypes = fc.constantFrom('true', 'false', 'null', '[]', '{}', '[1000]', '{"value":1000}', '[[[[[]]]]]');

const fractionLiteral = fc
  .tuple(fc.bigInt({ min: -(10n ** 13n), max: 10n ** 13n }), fc.stringMatching(/^[0-9]{1,8}$/))
  .map(([whole, fraction]) => `${whole}.${fraction}`);
const exponentLiteral = fc
  .tuple(
    fc.oneof(fc.integer({ min: -9999, max: 99_999 }).map(String), fractionLiteral),
    fc.constantFrom('e', 'E', 'e+', 'E+', 'e-', 'E-'),
    fc.integer({ min: 0, max: 400 }),
  )
  .map(([mantissa, e, exponent]) => `${mantissa}${e}${exponent}`);

/** Raw JSON text of an amount the contract refuses: fractions, exponents, floats, signs, zero, too large, not digits. */
export const invalidAmountJson: fc.Arbitrary<string> = fc
  .oneof(
    fc.bigInt({ min: -(10n ** 30n), max: 0n }).map(String),
    fc.bigInt({ min: MAX_AMOUNT + 1n, max: 10n ** 40n }).map(String),
    fc.constantFrom('-0', '9'.repeat(400), '9007199254740993'),
    // A fraction or an exponent is refused even when its value is whole: money is written as an integer.
    fractionLiteral,
    exponentLiteral,
    fc.constantFrom('4e3', '4E3', '4000.0', '4.0e3', '1e12', '1E+12', '1.0', '1e0', '1000000000000.0', '0.5', '1e400'),
    fc.oneof(fractionLiteral, exponentLiteral).map(json),
    fc
      .constantFrom(
        '',
        ' ',
        ' 1',
        '1 ',
        '+1',
        '-1',
        '0',
        '00',
        '0x10',
        '1_000',
        '1,000',
        '1.000',
        'NaN',
        'Infinity',
        '4e3',
        '4000.0',
        '1000000000001',
        '99999999999999999999999',
        '1\n',
      )
      .map(json),
    foreignDigits('1000').map(json),
    fc
      .string({ unit: 'grapheme', minLength: 1, maxLength: 30 })
      .filter((s) => !/^[0-9]+$/.test(s))
      .map(json),
    wrongTypes,
  )
  .filter((text) => !isValidAmountJson(text));

/** Raw JSON text of a phone number that is no Iranian mobile in any accepted form. */
export const invalidPhoneJson: fc.Arbitrary<string> = fc.oneof(
  fc
    .constantFrom(
      '۰۹۱۲۱۲۳۴۵۶۷',
      '٠٩١٢١٢٣٤٥٦٧',
      '０９１２１２３４５６７',
      '+۹۸۹۱۲۱۲۳۴۵۶۷',
      '0912 123 4567',
      '0912-123-4567',
      '+98 912 123 4567',
      '(0912) 1234567',
      '00989121234567',
      '9121234567',
      '091212345678',
      '0912123456',
      '02112345678',
      '08121234567',
      '+999121234567',
      '+9809121234567',
      '09121234567\n',
      ' 09121234567',
      '09121234567 ',
      '\u200f09121234567',
      '0\u200b9121234567',
      '09121234567\u0000',
      '',
    )
    .map(json),
  foreignDigits('09121234567').map(json),
  fc
    .stringMatching(/^[+0-9]{0,16}$/)
    .filter((s) => !iranMobile.test(s))
    .map(json),
  fc
    .string({ unit: 'grapheme', maxLength: 40 })
    .filter((s) => !iranMobile.test(s))
    .map(json),
  fc.constantFrom('9121234567', '989121234567', 'true', 'null', '[]', '{}', '["09121234567"]'),
);

/** Raw JSON text of a seller name that must be refused: empty, blank, too long, unprintable, not text. */
export const invalidNameJson: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('', ' ', '\t \n', '\u00a0\u3000').map(json),
  fc
    .string({ unit: 'grapheme-ascii', minLength: 201, maxLength: 3000 })
    .filter((s) => s.trim().length > 200)
    .map(json),
  fc
    .tuple(fc.string({ maxLength: 20 }), fc.integer({ min: 0, max: 0x1f }), fc.string({ maxLength: 20 }))
    // Letters on both sides, so that trimming cannot remove the control character.
    .map(([before, control, after]) => json(`Shop${before}${String.fromCharCode(control)}x${after}`)),
  // Unpaired surrogates can only be written as escapes: JSON.stringify would escape them the same way.
  fc.constantFrom('"Shop \\ud800"', '"\\udc00 Shop"', '"Sh\\ud83dop"', '"Shop\\u0000"', '"Shop\\u007f"'),
  fc.constantFrom('1', 'true', 'null', '[]', '{}', '["Shop"]'),
);

/** Raw JSON text of an email that must be refused. */
export const invalidEmailJson: fc.Arbitrary<string> = fc.oneof(
  fc
    .string({ unit: 'grapheme', maxLength: 60 })
    .filter((s) => !s.includes('@'))
    .map(json),
  fc
    .constantFrom(
      'a@',
      '@example.com',
      'a@b',
      'a b@example.com',
      'a@@example.com',
      'a@example..com',
      'a@exa mple.com',
      'a@example.com\n',
      ' a@example.com',
      'a@example.com\u0000',
      `${'a'.repeat(310)}@example.com`,
    )
    .map(json),
  fc.constantFrom('1', 'true', 'null', '[]', '{}'),
);

export const invalidBooleanJson = fc.constantFrom('"true"', '"false"', '1', '0', 'null', '[]', '{}', '"yes"', '[true]');

export const invalidActionJson: fc.Arbitrary<string> = fc.oneof(
  fc
    .constantFrom('APPROVE', 'Approve', ' approve', 'approve ', 'approved', 'rejected', 'accept', '', 'approve\u0000')
    .map(json),
  fc
    .string({ unit: 'grapheme', maxLength: 20 })
    .filter((s) => s !== 'approve' && s !== 'reject')
    .map(json),
  fc.constantFrom('1', 'true', 'null', '[]', '{}', '["approve"]'),
);

/** Raw JSON text of an id of the wrong type: ids are strings. */
export const nonStringIdJson = (id: string) =>
  fc.constantFrom('1', '0', 'null', 'true', '[]', '{}', json([id]), json({ id }));

// ---------------------------------------------------------------------------------------------
// Whole bodies

type Change = { kind: 'keep' } | { kind: 'missing' } | { kind: 'invalid'; raw: string };

const extraKeys = (known: readonly string[]) =>
  fc
    .oneof(
      fc.constantFrom(
        'Amount',
        'amount ',
        'sellerId',
        'seller',
        'seller_id',
        'credit_balance',
        'is_admin',
        'role',
        'status',
        'id',
        'constructor',
        'toString',
        'hasOwnProperty',
        '',
      ),
      fc.string({ unit: 'grapheme', maxLength: 20 }),
    )
    // `__proto__` is refused before validation and has a test of its own.
    .filter((key) => !known.includes(key) && key !== '__proto__');

export interface HostileBody {
  text: string;
  /** The fields a correct answer names: each one invalid, missing or unknown. */
  offending: string[];
}

/**
 * A body built from a valid one (raw JSON text per field) with at least one thing wrong: fields
 * given an invalid value or left out, and unknown fields added.
 */
export function hostileBody(
  valid: Record<string, string>,
  invalid: Record<string, fc.Arbitrary<string>>,
): fc.Arbitrary<HostileBody> {
  const names = Object.keys(valid);
  const change = (name: string): fc.Arbitrary<Change> =>
    fc.oneof(
      { arbitrary: fc.constant<Change>({ kind: 'keep' }), weight: 2 },
      { arbitrary: fc.constant<Change>({ kind: 'missing' }), weight: 1 },
      {
        arbitrary: (invalid[name] ?? fc.constant('null')).map((raw): Change => ({ kind: 'invalid', raw })),
        weight: 3,
      },
    );
  return fc
    .record({
      changes: fc.record(Object.fromEntries(names.map((name) => [name, change(name)]))),
      extra: fc.uniqueArray(fc.tuple(extraKeys(names), fc.json({ maxDepth: 2 })), {
        maxLength: 3,
        selector: ([key]) => key,
      }),
    })
    .filter(({ changes, extra }) => extra.length > 0 || Object.values(changes).some((c) => c.kind !== 'keep'))
    .map(({ changes, extra }) => {
      const entries: Array<[string, string]> = [];
      const offending: string[] = [];
      for (const name of names) {
        const c = changes[name] ?? { kind: 'keep' };
        if (c.kind === 'keep') entries.push([name, valid[name] ?? 'null']);
        else {
          offending.push(name);
          if (c.kind === 'invalid') entries.push([name, c.raw]);
        }
      }
      for (const [key, value] of extra) {
        entries.push([key, value]);
        offending.push(key);
      }
      return { text: `{${entries.map(([key, value]) => `${json(key)}:${value}`).join(',')}}`, offending };
    });
}

/** JSON that is no object: the body of every request is an object. */
export const nonObjectBody = (validText: string) =>
  fc.oneof(
    fc.constantFrom('null', '[]', '"a string"', '1', '0', 'true', `[${validText}]`, json(validText)),
    fc.json().filter((text) => {
      const value = JSON.parse(text);
      return typeof value !== 'object' || value === null || Array.isArray(value);
    }),
  );

/** Text that looks like JSON to a lenient eye and is not. */
export const classicMalformedJson = [
  '',
  ' ',
  '{',
  '}',
  '{"amount": 01}',
  '{"amount": 01.5}',
  '{"amount": -01.5e3}',
  '{"amount": -}',
  '{"amount": .5}',
  '{"amount": 1.}',
  '{"amount": 1e}',
  '{"amount": +1}',
  '{"amount": 0x10}',
  '{"amount": NaN}',
  '{"amount": Infinity}',
  "{'amount': 1}",
  '{amount: 1}',
  '{"amount": 1,}',
  '{"amount": 1} {"amount": 2}',
  '{"amount": 1}]',
  '{"amount": undefined}',
  '{"amount": "1000" /* rials */}',
  '{"a": "\\x41"}',
  '{"a": "tab\there"}',
  '{"a": "unterminated',
  `{"a": "${'\\"'.repeat(30_000)}`,
  '\u0000',
  '<xml/>',
  'amount=1000',
];

/** Text that is not JSON (a leading BOM aside, which the server's decoder drops before parsing). */
export const malformedJson = (validText: string) =>
  fc
    .oneof(
      fc.integer({ min: 0, max: validText.length - 1 }).map((cut) => validText.slice(0, cut)),
      fc.constantFrom(...classicMalformedJson),
      fc.string({ unit: 'binary', maxLength: 200 }),
    )
    .filter((text) => !text.startsWith('\ufeff') && !parses(text));

function parses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Content types that are not JSON, or not in a form the API reads as JSON. */
export const nonJsonContentType: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    'text/plain',
    'text/plain;charset=UTF-8',
    'text/json',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/xml',
    'application/jsonp',
    'application/json-patch+json',
    'application/vnd.api+json',
    'application/javascript',
    'json',
    '*/*',
    'application/*',
    'application/json;',
    'application/json ;charset=utf-8',
    'application/json; charset',
    'application/json, text/plain',
  ),
  fc.stringMatching(/^[a-z]{1,12}\/[a-z+.-]{1,16}$/).filter((type) => type !== 'application/json'),
);

// ---------------------------------------------------------------------------------------------
// Query parameters and path segments

export const invalidLimit: fc.Arbitrary<string> = fc.oneof(
  fc.integer({ min: -1_000_000_000, max: 0 }).map(String),
  fc.integer({ min: 501, max: 1_000_000_000 }).map(String),
  fc.constantFrom('', ' ', '1.5', '50.0', '5e1', '1e2', '+5', '-0', '0x10', '٥٠', '۵۰', '５０', '9'.repeat(30), 'NaN'),
  fc.string({ minLength: 1, maxLength: 10 }).filter((s) => !/^[0-9]+$/.test(s)),
);

export type CursorKind = 'uuid' | 'bigint';
const isCursorKey: Record<CursorKind, (key: string) => boolean> = {
  uuid: (key) => uuidPattern.test(key),
  bigint: (key) => /^[1-9][0-9]{0,18}$/.test(key) && BigInt(key) <= BIGINT_MAX,
};

/** A cursor that no page of a list of this kind ever gave out. */
export const invalidCursor = (kind: CursorKind): fc.Arbitrary<string> =>
  fc
    .oneof(
      fc.string({ unit: 'grapheme', maxLength: 40 }).map(b64),
      fc.bigInt({ min: BIGINT_MAX + 1n, max: 10n ** 30n }).map((n) => b64(String(n))),
      fc.bigInt({ min: -(10n ** 20n), max: 0n }).map((n) => b64(String(n))),
      fc.uuid().map((id) => b64(kind === 'uuid' ? `${id}x` : id)),
      fc.constantFrom(b64('1'), b64('01'), b64(' 1'), b64('9223372036854775808'), b64('')),
      fc.string({ minLength: 1, maxLength: 60 }),
      fc.string({ minLength: 201, maxLength: 400 }),
    )
    .filter((cursor) => cursor.length > 200 || !isCursorKey[kind](Buffer.from(cursor, 'base64url').toString('utf8')));

export const invalidEnum = (allowed: readonly string[]): fc.Arbitrary<string> =>
  fc
    .oneof(
      fc.constantFrom(
        ...allowed.map((value) => value.toUpperCase()),
        ...allowed.map((value) => `${value} `),
        ...allowed.map((value) => value.replace('_', '-')),
        allowed.join(','),
        '',
        '*',
        'all',
      ),
      fc.string({ unit: 'grapheme', maxLength: 20 }),
    )
    .filter((value) => !allowed.includes(value));

export const invalidUuid: fc.Arbitrary<string> = fc
  .oneof(
    fc.uuid().map((id) => `${id}x`),
    fc.uuid().map((id) => id.replaceAll('-', '')),
    fc.uuid().map((id) => `{${id}}`),
    fc.uuid().map((id) => `${id}\n`),
    fc.constantFrom('', 'null', '1', 'me', 'ZZZZZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZZZZZZZZZ'),
    fc.string({ unit: 'grapheme', maxLength: 40 }),
  )
  .filter((value) => !uuidPattern.test(value));

/**
 * A path segment, already percent-encoded, that names nothing: random text, well-formed ids of
 * nothing, and encodings meant to trip a decoder. `.` and `..` are left out: a client resolves
 * them before sending.
 */
export const unknownIdSegment: fc.Arbitrary<string> = fc.oneof(
  fc.uuid().map((id) => id),
  fc
    .string({ unit: 'grapheme', minLength: 1, maxLength: 60 })
    .filter((s) => s !== '.' && s !== '..')
    .map(encodeURIComponent),
  fc.constantFrom('0', '-1', 'null', '%25', '%2525', '%', '%E0%A4%A', '%00', '%C0%AE', 'a%2Fb', '%F0%9F%98%80', '~'),
);

export const isIranMobile = (value: string) => iranMobile.test(value);
