/** @jsxImportSource hono/jsx */
import { type Database, type DeliveryResolution, type DeliveryStatus, deliveries, deliveryResolutions } from '@cs/db';
import { sql } from 'drizzle-orm';
import { ApiError } from '../../errors.ts';
import { requireApprover } from '../../middleware/auth.ts';
import { type DeliveryRecord, parseDeliveryPage, readDeliveries, readDelivery } from '../../read-model/deliveries.ts';
import { sellersById } from '../../read-model/sellers.ts';
import { clientAddress } from '../../services/client-address.ts';
import { decideDelivery } from '../../services/resolve-delivery.ts';
import { type AdminContext, Form, readPageQuery, thisPage } from '../context.ts';
import { type Flash, setFlash } from '../flash.ts';
import { PROCESS_WAIT_MS } from '../process-requests.ts';
import { safeNext } from '../session.ts';
import { CsrfField, Pager, renderPage, rials, when } from '../views.tsx';

/** The tabs, in the order an operator needs them: what waits for a decision first. */
const tabs = [
  'unresolved',
  'conflict',
  'pending',
  'refund_due',
  'delivered',
  'refunded',
] as const satisfies readonly DeliveryStatus[];
const tabLabel: Record<DeliveryStatus, string> = {
  unresolved: 'Unresolved',
  conflict: 'Conflict',
  pending: 'Being delivered',
  refund_due: 'Refund due',
  delivered: 'Delivered',
  refunded: 'Refunded',
};
const tabHelp: Record<DeliveryStatus, string> = {
  unresolved:
    'The provider has not known for DELIVERY_GIVE_UP_AFTER: decide each one. It is still asked, and an answer that ' +
    'contradicts the decision moves the sale to Conflict.',
  conflict:
    "The provider's late answer contradicts the operator's decision: a refunded top-up that was delivered, or a " +
    'top-up marked delivered that failed. Settle it with the seller and the provider.',
  pending:
    'Debited, the provider is being asked again (the first answer was not "delivered"); most end within seconds. ' +
    'A sale just debited is sent at once and shows here only if its first answer leaves it open, or if its ' +
    'worker stopped before an answer (taken over once its hold ran out).',
  refund_due: "The top-up failed for certain (or an operator chose refund); the seller's partition writes the refund.",
  delivered:
    'Top-ups delivered after more than the first answer, or by an operator: their sales succeeded. A top-up ' +
    'delivered at the first answer is recorded on its sale (GET /api/jobs/{id}, and GET /api/deliveries/{id}), not listed here.',
  refunded: 'Refused top-ups, given back by a charge_refund ledger row.',
};
/** The statuses whose rows stay few: those in the partial index deliveries_attention_idx. */
const countedStatuses = ['unresolved', 'conflict', 'refund_due'] as const satisfies readonly DeliveryStatus[];
type CountedStatus = (typeof countedStatuses)[number];
const pillClass: Record<DeliveryStatus, string> = {
  unresolved: 'pending',
  conflict: 'rejected',
  pending: '',
  refund_due: 'pending',
  delivered: 'approved',
  refunded: 'rejected',
};

/**
 * How many deliveries wait for someone: unresolved, in conflict, refund due. One short range of
 * the partial index deliveries_attention_idx, never the delivered ones, which grow with every
 * sale. The statuses are written in the SQL, not sent as parameters, so that the plan of the
 * prepared statement may use that index.
 */
export async function deliveryCounts(db: Database): Promise<Record<CountedStatus, number>> {
  const counts: Record<CountedStatus, number> = { unresolved: 0, conflict: 0, refund_due: 0 };
  const rows = await db
    .select({ status: deliveries.status, count: sql<number>`count(*)::int` })
    .from(deliveries)
    .where(sql`${deliveries.status} in ('unresolved', 'conflict', 'refund_due')`)
    .groupBy(deliveries.status);
  for (const row of rows) {
    const status = countedStatuses.find((s) => s === row.status);
    if (status) counts[status] = row.count;
  }
  return counts;
}

/** The overview's pointer to the deliveries that wait for an operator, and the contradictions. */
export function DeliveriesNeedingOperator(props: {
  counts: Pick<Record<CountedStatus, number>, 'unresolved' | 'conflict'>;
}) {
  const { unresolved, conflict } = props.counts;
  return (
    <p class="bar" data-deliveries-attention="">
      <span class={unresolved > 0 ? 'bad' : 'muted'}>
        <a href="/admin/deliveries?status=unresolved">
          {rials(unresolved)} unresolved {unresolved === 1 ? 'delivery' : 'deliveries'}
        </a>
      </span>
      <span class={conflict > 0 ? 'bad' : 'muted'}>
        <a href="/admin/deliveries?status=conflict">
          {rials(conflict)} {conflict === 1 ? 'delivery' : 'deliveries'} in conflict
        </a>
      </span>
      <span class="muted">
        {unresolved > 0 ? 'An approver or an admin decides each unresolved one.' : 'Nothing waits for an operator.'}
      </span>
    </p>
  );
}

/** What became of the delivery, beyond its status: who decided it, the refund row, the contradiction. */
function Decision(props: { delivery: DeliveryRecord }) {
  const d = props.delivery;
  return (
    <span class="muted">
      {d.resolution && (
        <>
          {d.resolution === 'refund' ? 'refund' : 'delivered'} chosen by {d.resolvedBy} at {when(d.resolvedAt)}
          {'. '}
        </>
      )}
      {d.refundTransactionId !== null && <>Refund ledger row #{d.refundTransactionId.toString()}. </>}
      {d.conflictAt && <span class="bad">Provider contradicted it at {when(d.conflictAt)}. </span>}
      {d.providerReason && <>Provider: {d.providerReason}. </>}
      {d.deliveredAt && !d.resolution && <>Delivered at {when(d.deliveredAt)}. </>}
    </span>
  );
}

function ResolveForms(props: { delivery: DeliveryRecord; csrf: string | undefined; back: string }) {
  const form = (outcome: DeliveryResolution, label: string, css: string) => (
    <form method="post" action={`/admin/deliveries/${props.delivery.jobId}/resolve`}>
      <CsrfField token={props.csrf} />
      <input type="hidden" name="return" value={props.back} />
      <input type="hidden" name="outcome" value={outcome} />
      <button type="submit" class={css}>
        {label}
      </button>
    </form>
  );
  return (
    <span class="actions">
      {form('delivered', 'Mark delivered', 'approve')}
      {form('refund', 'Refund', 'reject')}
    </span>
  );
}

/**
 * `GET /admin/deliveries`: sales' top-ups by status, unresolved ones first (the default tab); an
 * approver or an admin marks an unresolved one delivered or refunds it, as the API's resolve does.
 */
export async function deliveriesPage(c: AdminContext) {
  const { db } = c.var.deps;
  const status = tabs.find((s) => s === c.req.query('status')) ?? 'unresolved';
  const page = parseDeliveryPage(readPageQuery(c));
  const [list, counts] = await Promise.all([readDeliveries(db, { status }, page), deliveryCounts(db)]);
  const sellers = await sellersById(
    db,
    list.items.map((d) => d.sellerId),
  );
  const role = c.var.caller.role;
  const mayResolve = role === 'admin' || role === 'approver';
  const csrf = c.var.session?.csrfToken;
  const back = thisPage(c);

  return renderPage(
    c,
    'Deliveries',
    'deliveries',
    <>
      <h1>Deliveries</h1>
      <nav class="bar" aria-label="Delivery status">
        {tabs.map((tab) => {
          const label = (
            <>
              {tabLabel[tab]}
              {countedStatuses.some((s) => s === tab) && ` (${rials(counts[tab as CountedStatus])})`}
            </>
          );
          return tab === status ? (
            <strong aria-current="page">{label}</strong>
          ) : (
            <a href={`/admin/deliveries?status=${tab}`}>{label}</a>
          );
        })}
      </nav>
      <p class="muted">{tabHelp[status]}</p>
      <table>
        <thead>
          <tr>
            <th>Sale (job id)</th>
            <th>Seller</th>
            <th>Phone</th>
            <th class="num">Amount (rials)</th>
            <th>Provider</th>
            <th class="num">Attempts</th>
            <th>Debited at</th>
            <th>Last error</th>
            <th>Decision</th>
          </tr>
        </thead>
        <tbody>
          {list.items.length === 0 && (
            <tr>
              <td colspan={9} class="muted">
                No {tabLabel[status].toLowerCase()} deliveries.
              </td>
            </tr>
          )}
          {list.items.map((delivery) => {
            const seller = sellers.get(delivery.sellerId);
            return (
              <tr data-delivery={delivery.jobId} data-status={delivery.status}>
                <td>
                  <a href={`/admin/sellers/${delivery.sellerId}`} title="The seller's page and ledger">
                    <code>{delivery.jobId}</code>
                  </a>
                  <div>
                    <span class={`pill ${pillClass[delivery.status]}`}>{delivery.status}</span>
                  </div>
                </td>
                <td>
                  <a href={`/admin/sellers/${delivery.sellerId}`}>{seller?.name ?? delivery.sellerId}</a>
                  <div class="muted">{seller?.email}</div>
                </td>
                <td class="nowrap">{delivery.phoneNumber}</td>
                <td class="num">{rials(delivery.amount)}</td>
                <td>{delivery.provider}</td>
                <td class="num">{delivery.attempts}</td>
                <td class="nowrap">{when(delivery.debitedAt)}</td>
                <td>{delivery.lastError ?? <span class="muted">—</span>}</td>
                <td>
                  {delivery.status === 'unresolved' && mayResolve ? (
                    <ResolveForms delivery={delivery} csrf={csrf} back={back} />
                  ) : (
                    <Decision delivery={delivery} />
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <Pager url={c.req.url} next={list.next_cursor} />
    </>,
  );
}

/** What the operator's decision did, in one line. */
function outcomeFlash(outcome: DeliveryResolution, d: DeliveryRecord, sellerName: string): Flash {
  const sale = `Sale ${d.jobId} (${rials(d.amount)} rials to ${d.phoneNumber}, ${sellerName})`;
  if (outcome === 'delivered') {
    return {
      kind: 'success',
      text: `${sale} marked delivered: it succeeded and nothing was refunded. The provider is still asked; a contradicting answer would show under Conflict.`,
    };
  }
  if (d.status === 'refunded' && d.refundTransactionId !== null) {
    return {
      kind: 'success',
      text: `${sale} refunded: ${rials(d.amount)} rials credited back (ledger row #${d.refundTransactionId}); the sale ended rejected.`,
    };
  }
  return {
    kind: 'warning',
    text: `${sale}: the refund is due, and the seller's partition writes it in a moment; reload to see it.`,
  };
}

/**
 * `POST /admin/deliveries/:id/resolve`: an approver's or an admin's decision on an unresolved
 * delivery, taken by the same function as the API's resolve (audited, once). A refund is written
 * by the seller's partition: the page waits a few seconds for it, to say what was done.
 */
export async function resolveDeliveryForm(c: AdminContext) {
  const form = await Form.read(c);
  const back = safeNext(form.one('return') ?? '/admin/deliveries');
  const outcome = deliveryResolutions.find((o) => o === form.one('outcome'));
  if (!outcome) {
    throw new ApiError('validation_error', 'Choose delivered or refund', {
      fields: { outcome: 'must be delivered or refund' },
    });
  }
  const caller = c.var.caller;
  requireApprover(caller);
  const { deps } = c.var;
  const id = c.req.param('id') ?? '';
  // Listening before deciding: the partition may write the refund before the decision returns.
  const waiter = outcome === 'refund' ? deps.jobEvents.waitForFinal(id.toLowerCase(), PROCESS_WAIT_MS) : undefined;
  let decided: DeliveryRecord;
  try {
    decided = await decideDelivery(deps, c.var.logger, id, outcome, { caller, ip: clientAddress(c) });
  } catch (error) {
    waiter?.cancel();
    if (error instanceof ApiError && (error.code === 'already_resolved' || error.code === 'delivery_pending')) {
      setFlash(c, {
        kind: 'warning',
        text:
          error.code === 'delivery_pending'
            ? `Sale ${id} is still being asked about; it can be decided once it is unresolved. Nothing was changed.`
            : `Sale ${id} was already decided (${error.details.status}); it was left as it was.`,
      });
      return c.redirect(back, 303);
    }
    throw error;
  }
  if (waiter && decided.status !== 'refunded') {
    await waiter.done;
    decided = (await readDelivery(deps.db, decided.jobId)) ?? decided;
  } else waiter?.cancel();
  const seller = (await sellersById(deps.db, [decided.sellerId])).get(decided.sellerId);
  c.var.logger.info({ jobId: decided.jobId, outcome }, 'delivery resolved by the operator');
  setFlash(c, outcomeFlash(outcome, decided, seller?.name ?? decided.sellerId));
  return c.redirect(back, 303);
}
