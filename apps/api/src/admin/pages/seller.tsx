/** @jsxImportSource hono/jsx */

import { type Database, transactionTypes, webhookDeliveries, webhookEndpoints } from '@cs/db';
import { reconcile } from '@cs/ledger';
import { eq, sql } from 'drizzle-orm';
import { ApiError } from '../../errors.ts';
import { actorOf, requireAdmin } from '../../middleware/auth.ts';
import { pendingTotals } from '../../read-model/credit-requests.ts';
import { parseLedgerPage, readLedger } from '../../read-model/ledger.ts';
import { findAccessibleSeller } from '../../routes/sellers.ts';
import { clientAddress } from '../../services/client-address.ts';
import { DEFAULT_LIMIT } from '../../services/pagination.ts';
import { type AdminContext, Form, readPageQuery, thisPage } from '../context.ts';
import { setFlash } from '../flash.ts';
import { safeNext } from '../session.ts';
import { ActiveToggle, Card, Pager, ReconcileState, renderPage, rials, when } from '../views.tsx';

const ledgerTypeLabel = {
  charge_sale: 'Charge sale',
  credit_increase: 'Credit increase',
  charge_refund: 'Refund',
} as const;
const rowsLabel = (n: number) => `${rials(n)} ${n === 1 ? 'row' : 'rows'}`;

/** How many of a seller's latest webhook deliveries its page shows. */
const WEBHOOK_ROWS = 20;

/**
 * The seller's webhook as its tables hold it, the secret left out (it is shown once, to the
 * seller), and its latest deliveries: newest first by id (`msg_` and a UUIDv7), read along
 * webhook_deliveries(seller_id, id desc).
 */
async function readWebhook(db: Database, sellerId: string) {
  const [[endpoint], latest] = await Promise.all([
    db
      .select({ url: webhookEndpoints.url, isActive: webhookEndpoints.isActive, updatedAt: webhookEndpoints.updatedAt })
      .from(webhookEndpoints)
      .where(eq(webhookEndpoints.sellerId, sellerId)),
    db
      .select({
        id: webhookDeliveries.id,
        eventType: webhookDeliveries.eventType,
        status: webhookDeliveries.status,
        attempts: webhookDeliveries.attempts,
        lastStatusCode: webhookDeliveries.lastStatusCode,
        lastError: webhookDeliveries.lastError,
        nextAttemptAt: webhookDeliveries.nextAttemptAt,
        createdAt: webhookDeliveries.createdAt,
      })
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.sellerId, sellerId))
      // As the index is ordered (DESC NULLS LAST): a plain `desc` would not read it in order.
      .orderBy(sql`${webhookDeliveries.id} desc nulls last`)
      .limit(WEBHOOK_ROWS),
  ]);
  return { endpoint, latest };
}

const webhookPill = { pending: 'pending', delivered: 'approved', failed: 'rejected' } as const;

function WebhookDeliveries(props: { webhook: Awaited<ReturnType<typeof readWebhook>> }) {
  const { endpoint, latest } = props.webhook;
  return (
    <>
      <h2>Webhook deliveries</h2>
      <p data-webhook-url={endpoint?.url ?? ''}>
        {endpoint ? (
          <>
            Webhook <code>{endpoint.url}</code>{' '}
            {endpoint.isActive ? (
              <span class="muted">· set {when(endpoint.updatedAt)}</span>
            ) : (
              <span class="pill">stopped: no new events are sent</span>
            )}
          </>
        ) : (
          <span class="muted">No webhook set: the seller polls for its results.</span>
        )}
      </p>
      <table>
        <thead>
          <tr>
            <th>Created</th>
            <th>Event</th>
            <th>Status</th>
            <th class="num">Attempts</th>
            <th class="num">Last status code</th>
            <th>Next attempt</th>
            <th>Last error</th>
          </tr>
        </thead>
        <tbody>
          {latest.length === 0 && (
            <tr>
              <td colspan={7} class="muted">
                No webhook deliveries.
              </td>
            </tr>
          )}
          {latest.map((row) => (
            <tr data-webhook-delivery={row.id}>
              <td class="nowrap">{when(row.createdAt)}</td>
              <td>
                {row.eventType}
                <div class="muted">
                  <code>{row.id}</code>
                </div>
              </td>
              <td>
                <span class={`pill ${webhookPill[row.status]}`}>{row.status}</span>
              </td>
              <td class="num">{row.attempts}</td>
              <td class="num">{row.lastStatusCode ?? '—'}</td>
              <td class="nowrap">{row.status === 'pending' ? when(row.nextAttemptAt) : '—'}</td>
              <td>{row.lastError ?? <span class="muted">—</span>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {latest.length === WEBHOOK_ROWS && (
        <p class="muted">
          The latest {WEBHOOK_ROWS}; GET /api/sellers/{'{id}'}/webhook/deliveries lists them all.
        </p>
      )}
    </>
  );
}

const findSeller = (c: AdminContext) => findAccessibleSeller(c.var.deps.db, c.var.caller, c.req.param('id') ?? '');

/** `GET /admin/sellers/:id`: the seller, its reconciliation, and its ledger by type, page by page. */
export async function sellerPage(c: AdminContext) {
  const { db, config } = c.var.deps;
  const page = parseLedgerPage(readPageQuery(c));
  const seller = await findSeller(c);
  const type = transactionTypes.find((t) => t === c.req.query('type'));
  const [[check], ledger, pending, webhook] = await Promise.all([
    reconcile(db, { ledgerKey: config.LEDGER_HMAC_KEY, sellerId: seller.id }),
    readLedger(db, { sellerId: seller.id, type }, page),
    pendingTotals(db, seller.id),
    readWebhook(db, seller.id),
  ]);

  return renderPage(
    c,
    seller.name,
    'sellers',
    <>
      <h1>
        {seller.name} {!seller.isActive && <span class="pill">inactive</span>}
      </h1>
      <p class="muted">
        {seller.email} · {seller.phone} · since {when(seller.createdAt)} · id <code>{seller.id}</code>
      </p>
      <div class="cards">
        <Card label="Balance (rials)" balance>
          {rials(seller.creditBalance)}
        </Card>
        <Card label="Sum of the ledger (rials)">{check ? rials(check.calculatedFromTransactions) : '—'}</Card>
        <Card label={<>Ledger check ({rowsLabel(check?.totalTransactions ?? 0)})</>}>
          <ReconcileState check={check} />
        </Card>
      </div>
      <div class="bar">
        <a href={`/admin/credit-requests?status=all&seller=${seller.id}`}>
          Credit requests of this seller ({pending.count} pending)
        </a>
        <ActiveToggle id={seller.id} isActive={seller.isActive} csrf={c.var.session?.csrfToken} back={thisPage(c)} />
      </div>
      <h2>Ledger</h2>
      <form class="bar" method="get" action={`/admin/sellers/${seller.id}`}>
        <label for="type">Type</label>
        <select id="type" name="type">
          <option value="">all</option>
          {transactionTypes.map((t) => (
            <option value={t} selected={t === type}>
              {ledgerTypeLabel[t]}
            </option>
          ))}
        </select>
        <label for="limit">Rows</label>
        <select id="limit" name="limit">
          {[25, DEFAULT_LIMIT, 100, 500].map((n) => (
            <option value={String(n)} selected={n === page.limit}>
              {n}
            </option>
          ))}
        </select>
        <button type="submit">Filter</button>
      </form>
      <table>
        <thead>
          <tr>
            <th>#</th>
            <th>When</th>
            <th>Type</th>
            <th class="num">Amount (rials)</th>
            <th class="num">Balance after (rials)</th>
            <th>Phone / credit request</th>
          </tr>
        </thead>
        <tbody>
          {ledger.items.length === 0 && (
            <tr>
              <td colspan={6} class="muted">
                No ledger rows{type ? ` of type ${ledgerTypeLabel[type]}` : ''}.
              </td>
            </tr>
          )}
          {ledger.items.map((row) => (
            <tr data-type={row.type}>
              <td>{row.id.toString()}</td>
              <td class="nowrap">{when(row.createdAt)}</td>
              <td>{ledgerTypeLabel[row.type]}</td>
              <td class={`num ${row.amount < 0n ? 'bad' : 'ok'}`}>{rials(row.amount)}</td>
              <td class="num">{rials(row.balanceAfter)}</td>
              <td>{row.phoneNumber ?? <code class="muted">{row.creditRequestId}</code>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager url={c.req.url} next={ledger.next_cursor} />
      <WebhookDeliveries webhook={webhook} />
    </>,
  );
}

/** `POST /admin/sellers/:id/active`: activate or deactivate, seen at once by every API process. */
export async function setActiveForm(c: AdminContext) {
  const form = await Form.read(c);
  const value = form.one('is_active');
  if (value !== 'true' && value !== 'false') {
    throw new ApiError('validation_error', 'is_active must be true or false', {
      fields: { is_active: 'must be true or false' },
    });
  }
  const caller = c.var.caller;
  requireAdmin(caller);
  const seller = await findSeller(c);
  const isActive = value === 'true';
  await c.var.deps.sellerKeys.setActive(seller.id, isActive, {
    actor: actorOf(caller),
    action: 'seller.updated',
    targetType: 'seller',
    targetId: seller.id,
    ip: clientAddress(c),
    details: { is_active: isActive },
  });
  c.var.logger.info({ sellerId: seller.id, isActive }, 'seller activation changed by the operator');
  setFlash(c, {
    kind: 'success',
    text: isActive
      ? `${seller.name} is active: its sales are accepted again.`
      : `${seller.name} is inactive: its new sales are refused, and those still queued will be rejected.`,
  });
  return c.redirect(safeNext(form.one('return') ?? `/admin/sellers/${seller.id}`), 303);
}
