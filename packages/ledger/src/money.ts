/** The smallest and largest amount one operation may move, in integer rials. */
export const MIN_AMOUNT = 1n;
export const MAX_AMOUNT = 1_000_000_000_000n;

/**
 * Reads an amount given as a JSON integer or a string of digits. Returns null for anything else:
 * fractions, exponents, signs, zero, out of range. Money never passes through a float: a number
 * is accepted only when it is a safe integer, and turned into a bigint at once.
 */
export function parseAmount(value: unknown): bigint | null {
  let amount: bigint;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) return null;
    amount = BigInt(value);
  } else if (typeof value === 'string') {
    if (!/^[0-9]{1,20}$/.test(value)) return null;
    amount = BigInt(value);
  } else {
    return null;
  }
  return amount >= MIN_AMOUNT && amount <= MAX_AMOUNT ? amount : null;
}
