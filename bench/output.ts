/** What every part of the bench prints with: numbers as the tables show them, elapsed time, a line. */

/** A number with thousands separators and a fixed count of decimals; `-` for NaN or infinity. */
export const fmt = (n: number, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : '-';

export const log = (line: string) => console.log(line);

export const elapsed = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;
