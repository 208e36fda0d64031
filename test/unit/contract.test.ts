import { isJobId, jobIdsOf } from '@cs/queue';
import { describe, expect, it } from 'vitest';

const a = '0190b000-0000-7000-8000-000000000001';
const b = '0190b000-0000-7000-8000-00000000000b';

describe('jobIdsOf', () => {
  it('takes the uuids a message names, in order', () => {
    expect(jobIdsOf({ ids: [a, b] })).toEqual([a, b]);
  });

  it('lowercases them, as the job rows are keyed', () => {
    expect(jobIdsOf({ ids: [a.toUpperCase(), 'DEADBEEF-0000-4000-A000-00000000000F'] })).toEqual([
      a,
      'deadbeef-0000-4000-a000-00000000000f',
    ]);
  });

  it('ignores every id that is not a uuid, keeping the others', () => {
    const junk = [
      '',
      'x',
      42,
      null,
      undefined,
      true,
      { id: a },
      [a],
      `${a}x`,
      ` ${a}`,
      `{${a}}`,
      a.replaceAll('-', ''),
      `${a}\n`,
      "0190b000-0000-7000-8000-000000000001' or 1=1 --",
    ];
    expect(jobIdsOf({ ids: [junk[0], a, ...junk.slice(1), b] })).toEqual([a, b]);
  });

  it('ignores everything else the message carries', () => {
    expect(jobIdsOf({ ids: [a], type: 'charge_sale', amount: '1', seller_id: b })).toEqual([a]);
  });

  it.each([[null], [undefined], [a], [[a]], [{}], [{ ids: a }], [{ ids: { 0: a, length: 1 } }], [{ id: a }], [42]])(
    'names no job in %j',
    (data) => {
      expect(jobIdsOf(data)).toEqual([]);
    },
  );

  it('agrees with isJobId', () => {
    expect(isJobId(a)).toBe(true);
    expect(isJobId(`${a}x`)).toBe(false);
    expect(isJobId(42)).toBe(false);
  });
});
