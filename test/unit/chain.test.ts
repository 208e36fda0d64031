import { CHAIN_START, type ChainedRow, ChainVerifier, sealRow } from '@cs/ledger';
import { describe, expect, it } from 'vitest';

const KEY = 'unit-test-ledger-key-0123456789abcdef';
const SELLER = '0190a000-0000-7000-8000-000000000001';

const rows: ChainedRow[] = [
  {
    id: '1',
    sellerId: SELLER,
    type: 'credit_increase',
    amount: '10000',
    balanceAfter: '10000',
    jobId: '0190b000-0000-7000-8000-000000000001',
    creditRequestId: '0190c000-0000-7000-8000-000000000001',
    phoneNumber: null,
    description: 'Credit request approved by admin',
    createdAtMicros: '1718000000000000',
    refundOf: null,
  },
  {
    id: '5',
    sellerId: SELLER,
    type: 'charge_sale',
    amount: '-4000',
    balanceAfter: '6000',
    jobId: '0190b000-0000-7000-8000-000000000002',
    creditRequestId: null,
    phoneNumber: '09121234567',
    description: 'Charge of 4000 rials to 09121234567',
    createdAtMicros: '1718000000000001',
    refundOf: null,
  },
  {
    id: '9',
    sellerId: SELLER,
    type: 'charge_sale',
    amount: '-1000',
    balanceAfter: '5000',
    jobId: '0190b000-0000-7000-8000-000000000003',
    creditRequestId: null,
    phoneNumber: '09127654321',
    description: 'Charge of 1000 rials to 09127654321',
    createdAtMicros: '1718000000000002',
    refundOf: null,
  },
];

/** The hmacs of `rows`, each sealed over the previous one. */
function sealAll(key: string, chain: readonly ChainedRow[]): string[] {
  const hmacs: string[] = [];
  for (const row of chain) hmacs.push(sealRow(key, row, hmacs.at(-1) ?? CHAIN_START));
  return hmacs;
}

const hmacs = sealAll(KEY, rows);
const head = hmacs.at(-1) as string;

function verify(
  chain: readonly ChainedRow[],
  seals: ReadonlyArray<string | null>,
  recordedHead: string | null,
  key = KEY,
) {
  const verifier = new ChainVerifier(key);
  chain.forEach((row, i) => {
    verifier.add(row, seals[i] ?? null);
  });
  return verifier.result(recordedHead);
}

/** A value for `field` that differs from `value`, of the same kind. */
function changed(field: keyof ChainedRow, value: string | null): string | null {
  if (value === null) return field === 'phoneNumber' ? '09120000000' : '0190c000-0000-7000-8000-000000000999';
  if (/^-?[0-9]+$/.test(value)) return (BigInt(value) + 1n).toString();
  return `${value}x`;
}

describe('sealRow', () => {
  it('is an HMAC-SHA256 in hex, the same for the same row, key and previous hmac', () => {
    expect(hmacs[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(sealRow(KEY, { ...(rows[0] as ChainedRow) }, CHAIN_START)).toBe(hmacs[0]);
  });

  it('depends on the previous hmac', () => {
    expect(sealRow(KEY, rows[1] as ChainedRow, 'a'.repeat(64))).not.toBe(hmacs[1]);
  });

  it('tells null from a string that reads "null", and moved text from one field to the next', () => {
    const row = rows[1] as ChainedRow;
    expect(sealRow(KEY, { ...row, creditRequestId: 'null' }, CHAIN_START)).not.toBe(sealRow(KEY, row, CHAIN_START));
    expect(sealRow(KEY, { ...row, creditRequestId: '' }, CHAIN_START)).not.toBe(sealRow(KEY, row, CHAIN_START));
    const split = { ...row, phoneNumber: '0912', description: `1234567${row.description}` };
    const joined = { ...row, phoneNumber: '09121234567', description: row.description };
    expect(sealRow(KEY, split, CHAIN_START)).not.toBe(sealRow(KEY, joined, CHAIN_START));
    const quoted = { ...row, phoneNumber: '09121234567","x' };
    expect(sealRow(KEY, quoted, CHAIN_START)).not.toBe(sealRow(KEY, { ...row, description: 'x' }, CHAIN_START));
  });
});

describe('ChainVerifier', () => {
  it('accepts an intact chain that ends at the recorded head', () => {
    expect(verify(rows, hmacs, head)).toEqual({ head, brokenAt: null, intact: true });
  });

  it('accepts a seller without rows and without a head', () => {
    expect(verify([], [], null)).toEqual({ head: null, brokenAt: null, intact: true });
  });

  const fields = Object.keys(rows[0] as ChainedRow) as Array<keyof ChainedRow>;
  it('covers every column of the row', () => {
    expect(fields.sort()).toEqual(
      [
        'amount',
        'balanceAfter',
        'createdAtMicros',
        'creditRequestId',
        'description',
        'id',
        'jobId',
        'phoneNumber',
        'refundOf',
        'sellerId',
        'type',
      ].sort(),
    );
  });

  for (const [index, row] of rows.entries()) {
    for (const field of fields) {
      it(`breaks at row ${row.id} when its ${field} is changed`, () => {
        const tampered = rows.map((r, i) => (i === index ? { ...r, [field]: changed(field, r[field]) } : r));
        expect(tampered[index]?.[field]).not.toEqual(row[field]);
        // Reported by the id the row now carries (which is the changed one when the id was changed).
        expect(verify(tampered, hmacs, head)).toMatchObject({ brokenAt: tampered[index]?.id, intact: false });
      });
    }

    it(`breaks at row ${row.id} when its hmac is changed or missing`, () => {
      const original = hmacs[index] as string;
      const flipped = `${original.slice(0, -1)}${original.endsWith('0') ? '1' : '0'}`;
      for (const seal of [flipped, null, '']) {
        const seals = hmacs.map((h, i) => (i === index ? seal : h));
        expect(verify(rows, seals, head)).toMatchObject({ brokenAt: row.id, intact: false });
      }
    });
  }

  it('breaks when a row is removed from the middle or two rows trade places', () => {
    expect(verify([rows[0], rows[2]] as ChainedRow[], [hmacs[0], hmacs[2]] as string[], head)).toMatchObject({
      brokenAt: rows[2]?.id,
      intact: false,
    });
    expect(
      verify([rows[0], rows[2], rows[1]] as ChainedRow[], [hmacs[0], hmacs[2], hmacs[1]] as string[], head),
    ).toMatchObject({ brokenAt: rows[2]?.id, intact: false });
  });

  it('reports a cut tail at the last row left: the chain no longer ends at the recorded head', () => {
    expect(verify(rows.slice(0, 2), hmacs.slice(0, 2), head)).toEqual({
      head: hmacs[1],
      brokenAt: rows[1]?.id,
      intact: false,
    });
  });

  it('is not intact when every row is gone but the seller still records a head', () => {
    expect(verify([], [], head)).toMatchObject({ head: null, intact: false });
  });

  it('is not intact when rows exist but the seller records no head', () => {
    expect(verify(rows, hmacs, null)).toMatchObject({ brokenAt: rows[2]?.id, intact: false });
  });

  it('fails at the first row under another key, and a chain resealed with another key fails under the real one', () => {
    expect(verify(rows, hmacs, head, `${KEY}-other`)).toMatchObject({ brokenAt: rows[0]?.id, intact: false });
    const forged = sealAll('an-attacker-key-that-is-long-enough-000', rows);
    expect(verify(rows, forged, forged.at(-1) as string)).toMatchObject({ brokenAt: rows[0]?.id, intact: false });
  });
});
