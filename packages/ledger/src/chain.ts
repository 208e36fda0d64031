import { createHmac } from 'node:crypto';

/**
 * The ledger's hash chain. Each row carries an HMAC over every other column of the row and the
 * previous row of the same seller, keyed with a secret the processes hold and the database does
 * not. Privileges stop the application from rewriting history; the chain shows it when someone
 * who could write the tables anyway (their owner, a superuser, someone with the disk) did: without
 * the key, a changed row cannot be given a matching hmac, nor can the rows after it.
 */

/** A ledger row as the chain covers it: every column but the hmac itself. */
export interface ChainedRow {
  id: string;
  sellerId: string;
  type: string;
  /** Signed integer rials, as a string of digits. */
  amount: string;
  balanceAfter: string;
  jobId: string;
  creditRequestId: string | null;
  phoneNumber: string | null;
  description: string | null;
  /** created_at in microseconds since the epoch, PostgreSQL's own precision. */
  createdAtMicros: string;
  /** A refund: the id of the sale row it gives back; null on every other row. */
  refundOf: string | null;
}

/** The previous hmac of a seller's first row. */
export const CHAIN_START = '';

/**
 * The row's hmac given the previous row's. The message is a JSON array with a version first: JSON
 * leaves no two rows the same text, whatever their descriptions hold.
 */
export function sealRow(key: string, row: ChainedRow, previous: string): string {
  const message = JSON.stringify([
    'cs-ledger-v1',
    row.id,
    row.sellerId,
    row.type,
    row.amount,
    row.balanceAfter,
    row.jobId,
    row.creditRequestId,
    row.phoneNumber,
    row.description,
    row.createdAtMicros,
    // Only a refund carries it, so the rows sealed before refunds existed keep their hmacs.
    ...(row.refundOf === null ? [] : [row.refundOf]),
    previous,
  ]);
  return createHmac('sha256', key).update(message).digest('hex');
}

export interface ChainCheck {
  /** The hmac of the seller's last row; null without rows. */
  head: string | null;
  /** The id of the first row whose hmac does not verify; null when all do. */
  brokenAt: string | null;
}

/**
 * Follows one seller's chain over its rows in id order. Feed rows with `add`, then read `result`.
 * `recordedHead` is the head the seller's row says its chain ends at: rows cut off the end show
 * as a head that no longer matches it, reported at the last row that is left.
 */
export class ChainVerifier {
  private previous = CHAIN_START;
  private lastId: string | null = null;
  private broken: string | null = null;

  constructor(private readonly key: string) {}

  add(row: ChainedRow, hmac: string | null): void {
    this.lastId = row.id;
    if (this.broken === null && (hmac === null || sealRow(this.key, row, this.previous) !== hmac)) {
      this.broken = row.id;
    }
    this.previous = hmac ?? '';
  }

  result(recordedHead: string | null): ChainCheck & { intact: boolean } {
    const head = this.lastId === null ? null : this.previous;
    const headMatches = head === recordedHead;
    const brokenAt = this.broken ?? (headMatches ? null : this.lastId);
    return { head, brokenAt, intact: brokenAt === null && headMatches };
  }
}
