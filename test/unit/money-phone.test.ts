import { MAX_AMOUNT, MIN_AMOUNT, normalisePhone, parseAmount } from '@cs/ledger';
import { describe, expect, it } from 'vitest';

describe('parseAmount', () => {
  it('bounds amounts to 1 .. 10^12 rials', () => {
    expect(MIN_AMOUNT).toBe(1n);
    expect(MAX_AMOUNT).toBe(10n ** 12n);
  });

  it.each([
    [1, 1n],
    [4000, 4000n],
    [1_000_000_000_000, 1_000_000_000_000n],
    ['1', 1n],
    ['4000', 4000n],
    ['1000000000000', 1_000_000_000_000n],
    ['0004000', 4000n],
    ['00000000000000000001', 1n],
  ])('accepts %j as %s', (input, expected) => {
    expect(parseAmount(input)).toBe(expected);
  });

  it('returns a bigint, never a number', () => {
    expect(typeof parseAmount(4000)).toBe('bigint');
    expect(typeof parseAmount('4000')).toBe('bigint');
  });

  it.each([
    // zero, signs, out of range
    0,
    -0,
    -1,
    1_000_000_000_001,
    Number.MAX_SAFE_INTEGER,
    '0',
    '000',
    '-1',
    '+1',
    '-0',
    '1000000000001',
    '9'.repeat(20),
    // fractions, exponents, floats
    0.5,
    4000.5,
    1.000_000_1,
    '4000.0',
    '4000.5',
    '0.5',
    '4e3',
    '4E3',
    '1e12',
    '1E+12',
    // unsafe integers and non-finite numbers
    2 ** 53,
    // What JSON.parse makes of these: 2^53 and Infinity.
    JSON.parse('9007199254740993'),
    JSON.parse('1e400'),
    Number.POSITIVE_INFINITY,
    Number.NaN,
    // digits that are not ASCII, and strings that are not just digits
    '۴۰۰۰',
    '٤٠٠٠',
    '４０００',
    '4۰00',
    '',
    ' 4000',
    '4000 ',
    '4000\n',
    '4,000',
    '4_000',
    '0x10',
    '1n',
    '000000000000000000001',
  ])('refuses %j', (input) => {
    expect(parseAmount(input)).toBeNull();
  });

  it.each([[null], [undefined], [true], [4000n], [[4000]], [{ value: 4000 }], [new Number(4000)]])(
    'refuses a value that is neither a number nor a string: %s',
    (input) => {
      expect(parseAmount(input)).toBeNull();
    },
  );
});

describe('normalisePhone', () => {
  it.each([
    ['09121234567', '09121234567'],
    ['+989121234567', '09121234567'],
    ['989121234567', '09121234567'],
    ['09901234567', '09901234567'],
    ['+989990000000', '09990000000'],
  ])('accepts %s as %s', (input, expected) => {
    expect(normalisePhone(input)).toBe(expected);
  });

  it.each([
    '',
    '9121234567',
    '0912123456',
    '091212345678',
    '08121234567',
    '00989121234567',
    '+9809121234567',
    '+98 912 123 4567',
    '0912-123-4567',
    ' 09121234567',
    '09121234567 ',
    '09121234567\n',
    '+19121234567',
    '+98912123456a',
    '۰۹۱۲۱۲۳۴۵۶۷',
    '٠٩١٢١٢٣٤٥٦٧',
    '０９１２１２３４５６７',
    '0912123456۷',
  ])('refuses %j', (input) => {
    expect(normalisePhone(input)).toBeNull();
  });
});
