import type { creditRequests, deliveries, jobs, phoneNumbers, sellers, transactions } from '@cs/db';
import type { JobResource } from '@cs/queue';
import type { Page } from '../read-model/page.ts';

/** Row → resource of the HTTP contract. Amounts leave as strings of digits, times as ISO 8601. */

/** A page of rows as the contract's list: `{items, next_cursor}`. */
export function listView<Row, Item>(list: Page<Row>, view: (row: Row) => Item): Page<Item> {
  return { items: list.items.map(view), next_cursor: list.next_cursor };
}

export function sellerView(row: typeof sellers.$inferSelect) {
  return {
    id: row.id,
    name: row.name,
    email: row.email,
    phone: row.phone,
    credit_balance: row.creditBalance.toString(),
    is_active: row.isActive,
    created_at: row.createdAt.toISOString(),
  };
}

export function creditRequestView(row: typeof creditRequests.$inferSelect) {
  return {
    id: row.id,
    seller: row.sellerId,
    amount: row.amount.toString(),
    status: row.status,
    requested_at: row.requestedAt.toISOString(),
    processed_at: row.processedAt?.toISOString() ?? null,
    processed_by: row.processedBy,
  };
}

export function transactionView(row: typeof transactions.$inferSelect) {
  return {
    id: row.id.toString(),
    seller_id: row.sellerId,
    type: row.type,
    amount: row.amount.toString(),
    balance_after: row.balanceAfter.toString(),
    credit_request_id: row.creditRequestId,
    phone_number: row.phoneNumber,
    description: row.description,
    created_at: row.createdAt.toISOString(),
  };
}

export function phoneNumberView(row: typeof phoneNumbers.$inferSelect) {
  return {
    number: row.number,
    total_charged: row.totalCharged.toString(),
    charge_count: Number(row.chargeCount),
    created_at: row.createdAt.toISOString(),
  };
}

export function jobView(row: typeof jobs.$inferSelect, status = row.status): JobResource {
  return {
    job_id: row.id,
    type: row.type,
    seller_id: row.sellerId,
    status,
    submitted_at: row.submittedAt.toISOString(),
    finished_at: row.finishedAt?.toISOString() ?? null,
    result: (row.result as Record<string, unknown> | null) ?? null,
    error: (row.error as Record<string, unknown> | null) ?? null,
  };
}

export function deliveryView(row: typeof deliveries.$inferSelect) {
  return {
    id: row.jobId,
    seller_id: row.sellerId,
    phone_number: row.phoneNumber,
    amount: row.amount.toString(),
    provider: row.provider,
    status: row.status,
    attempts: row.attempts,
    provider_reference: row.providerReference,
    provider_reason: row.providerReason,
    last_error: row.lastError,
    debited_at: row.debitedAt.toISOString(),
    delivered_at: row.deliveredAt?.toISOString() ?? null,
    gave_up_at: row.gaveUpAt?.toISOString() ?? null,
    next_attempt_at: row.watching ? row.nextAttemptAt.toISOString() : null,
    resolution: row.resolution,
    resolved_by: row.resolvedBy,
    resolved_at: row.resolvedAt?.toISOString() ?? null,
    refund_transaction_id: row.refundTransactionId?.toString() ?? null,
    conflict_at: row.conflictAt?.toISOString() ?? null,
  };
}
