import type { DeliveryResolution } from '@cs/db';
import { markRefundDue, settleDelivered } from '@cs/ledger';
import { refundMessageId } from '@cs/queue';
import type { Logger } from 'pino';
import type { AppDeps, OperatorCaller } from '../context.ts';
import { ApiError, notFound } from '../errors.ts';
import { actorOf } from '../middleware/auth.ts';
import { type DeliveryRecord, readDelivery } from '../read-model/deliveries.ts';

/**
 * An operator's decision on an unresolved delivery, the one way both `POST
 * /api/deliveries/{id}/resolve` and the Deliveries page take it: "delivered" ends the sale
 * succeeded at once; "refund" marks the refund due and sends the sale back to its seller's
 * partition, which writes the `charge_refund` row (the API never writes money). Audited with the
 * move, in its transaction. The caller checks the role first.
 *
 * Throws 404 for an unknown delivery, 409 `delivery_pending` while the provider is still being
 * asked, 409 `already_resolved` once it is decided or ended. Returns the delivery as it is now.
 */
export async function decideDelivery(
  deps: Pick<AppDeps, 'db' | 'queues'>,
  logger: Logger,
  id: string,
  outcome: DeliveryResolution,
  who: { caller: OperatorCaller; ip: string | null },
): Promise<DeliveryRecord> {
  const { db, queues } = deps;
  const delivery = await readDelivery(db, id);
  if (!delivery) throw notFound('Delivery');
  // Only an unresolved delivery is the operator's to decide (a status never goes back to pending).
  if (delivery.status === 'pending') {
    throw new ApiError(
      'delivery_pending',
      'The provider is still being asked; a delivery can be resolved once it is unresolved',
      { status: delivery.status },
    );
  }
  const by = { name: who.caller.operator.name, actor: actorOf(who.caller), ip: who.ip };
  // Each move is guarded by the status it leaves, in the same statement: an operator and the
  // provider's answer (or two operators) racing each other leave exactly one decision.
  const moved =
    outcome === 'delivered'
      ? await settleDelivered(db, [
          { jobId: delivery.jobId, providerReference: null, attempts: 0, resolvedBy: by },
        ]).then(async (settled) => {
          await queues.publish(settled.map((s) => ({ job_id: s.jobId, status: 'succeeded', type: 'charge_sale' })));
          return settled.length > 0;
        })
      : await markRefundDue(db, delivery.jobId, {
          reason: 'resolved_by_operator',
          attempts: delivery.attempts,
          resolvedBy: by,
        }).then(async (marked) => {
          // A lost message is put back by the partition's requeue: the refund is due in PostgreSQL.
          if (marked) {
            await queues
              .deliver(marked.partition, refundMessageId(delivery.jobId), [delivery.jobId])
              .catch((err: Error) => logger.warn({ err: err.message }, 'could not queue the refund'));
          }
          return marked !== null;
        });
  if (!moved) {
    // Decided meanwhile (a status never goes back to pending): by the provider's answer, or another operator.
    const now = (await readDelivery(db, id)) ?? delivery;
    throw new ApiError('already_resolved', `The delivery is already ${now.status}`, { status: now.status });
  }
  return (await readDelivery(db, id)) ?? delivery;
}
