/** @jsxImportSource hono/jsx */
import { creditRequestStatuses, isOpenCreditRequest, openCreditRequestStatuses } from '@cs/db';
import { ApiError, notFound } from '../../errors.ts';
import { approvalBy, requireApprover } from '../../middleware/auth.ts';
import { parseCreditRequestPage, pendingTotals, readCreditRequests } from '../../read-model/credit-requests.ts';
import { sellersById } from '../../read-model/sellers.ts';
import { isUuid } from '../../schemas.ts';
import { clientAddress } from '../../services/client-address.ts';
import { type AdminContext, Form, readPageQuery, thisPage } from '../context.ts';
import { setFlash } from '../flash.ts';
import { type CreditAction, MAX_BATCH, processCreditRequests, summarise } from '../process-requests.ts';
import { safeNext } from '../session.ts';
import { Card, CsrfField, Pager, renderPage, rials, when } from '../views.tsx';

const statusFilters = ['open', ...creditRequestStatuses, 'all'] as const;

/** `?seller=` must name a seller: a malformed one is a 404, as on the API, never "show everything". */
function optionalSellerId(value: string | undefined): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (!isUuid(value)) throw notFound('Seller');
  return value;
}

/** `GET /admin/credit-requests`: pending ones first, each with its seller; approve or reject. */
export async function creditRequestsPage(c: AdminContext) {
  const { db } = c.var.deps;
  const status = statusFilters.find((s) => s === c.req.query('status')) ?? 'open';
  const sellerId = optionalSellerId(c.req.query('seller'));
  const page = parseCreditRequestPage(readPageQuery(c));
  const statuses = status === 'all' ? undefined : status === 'open' ? openCreditRequestStatuses : [status];
  const requests = await readCreditRequests(db, { sellerId, statuses }, page);
  const [sellers, pending] = await Promise.all([
    sellersById(
      db,
      requests.items.map((r) => r.sellerId),
    ),
    pendingTotals(db),
  ]);
  const anyPending = requests.items.some((r) => isOpenCreditRequest(r.status));
  const csrf = c.var.session?.csrfToken;

  return renderPage(
    c,
    'Credit requests',
    'requests',
    <>
      <h1>Credit requests</h1>
      <div class="cards">
        <Card label="Pending requests">{rials(pending.count)}</Card>
        <Card label="Pending amount (rials)">{rials(pending.amount)}</Card>
      </div>
      <form class="bar" method="get" action="/admin/credit-requests">
        <label for="status">Show</label>
        <select id="status" name="status">
          {statusFilters.map((s) => (
            <option value={s} selected={s === status}>
              {s === 'all' ? 'all requests' : s}
            </option>
          ))}
        </select>
        {sellerId && <input type="hidden" name="seller" value={sellerId} />}
        <button type="submit">Show</button>
        {sellerId && <a href={`/admin/credit-requests?status=${status}`}>Show every seller</a>}
      </form>
      <form method="post" action="/admin/credit-requests/process">
        <CsrfField token={csrf} />
        <input type="hidden" name="return" value={thisPage(c)} />
        {anyPending && (
          <div class="bar">
            <span class="muted">With the ticked requests:</span>
            <button class="approve" type="submit" name="action" value="approve">
              Approve selected
            </button>
            <button class="reject" type="submit" name="action" value="reject">
              Reject selected
            </button>
          </div>
        )}
        <table>
          <thead>
            <tr>
              <th>
                <span class="muted">Pick</span>
              </th>
              <th>Requested</th>
              <th>Seller</th>
              <th class="num">Amount (rials)</th>
              <th class="num">Seller balance (rials)</th>
              <th>Status</th>
              <th>Decision</th>
            </tr>
          </thead>
          <tbody>
            {requests.items.length === 0 && (
              <tr>
                <td colspan={7} class="muted">
                  No {status === 'all' ? '' : status} credit requests.
                </td>
              </tr>
            )}
            {requests.items.map((request) => {
              const seller = sellers.get(request.sellerId);
              return (
                <tr data-request={request.id}>
                  <td>
                    {isOpenCreditRequest(request.status) && (
                      <input type="checkbox" name="ids" value={request.id} aria-label={`Select ${seller?.name}`} />
                    )}
                  </td>
                  <td class="nowrap">{when(request.requestedAt)}</td>
                  <td>
                    <a href={`/admin/sellers/${request.sellerId}`}>{seller?.name}</a>
                    {seller && !seller.isActive && <span class="pill"> inactive</span>}
                    <div class="muted">{seller?.email}</div>
                  </td>
                  <td class="num">{rials(request.amount)}</td>
                  <td class="num">{seller ? rials(seller.creditBalance) : '—'}</td>
                  <td>
                    <span class={`pill ${request.status}`}>{request.status}</span>
                  </td>
                  <td>
                    {isOpenCreditRequest(request.status) ? (
                      <span class="actions">
                        {request.firstApprovedBy && (
                          <span class="muted">first approved by {request.firstApprovedBy}; </span>
                        )}
                        <button class="approve" type="submit" name="single" value={`approve:${request.id}`}>
                          Approve
                        </button>
                        <button class="reject" type="submit" name="single" value={`reject:${request.id}`}>
                          Reject
                        </button>
                      </span>
                    ) : (
                      <span class="muted">
                        {when(request.processedAt)} by {request.processedBy}
                      </span>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </form>
      <Pager url={c.req.url} next={requests.next_cursor} />
    </>,
  );
}

/** Which requests, and what to do with them: one row's button, or the ticked boxes. */
function readDecision(form: Form): { action: CreditAction; ids: string[] } {
  const single = form.one('single');
  const [action, ...ids] = single ? single.split(':') : [form.one('action'), ...form.all('ids')];
  if (action !== 'approve' && action !== 'reject') {
    throw new ApiError('validation_error', 'Choose approve or reject', {
      fields: { action: 'must be approve or reject' },
    });
  }
  const unique = [...new Set(ids.filter((id): id is string => id !== undefined))];
  if (unique.some((id) => !isUuid(id)) || unique.length > MAX_BATCH) {
    throw new ApiError('validation_error', `Select at most ${MAX_BATCH} credit requests`, {
      fields: { ids: `must be up to ${MAX_BATCH} credit request ids` },
    });
  }
  return { action, ids: unique };
}

/** `POST /admin/credit-requests/process`: one job per request, as the API runs them, then what they did. */
export async function processRequestsForm(c: AdminContext) {
  const form = await Form.read(c);
  const back = safeNext(form.one('return'));
  const { action, ids } = readDecision(form);
  if (ids.length === 0) {
    setFlash(c, { kind: 'warning', text: 'Tick at least one request first.' });
    return c.redirect(back, 303);
  }
  const caller = c.var.caller;
  requireApprover(caller);
  const outcomes = await processCreditRequests(
    c.var.deps,
    ids,
    action,
    approvalBy(caller, clientAddress(c)),
    c.var.requestId,
  );
  setFlash(c, summarise(action, outcomes));
  return c.redirect(back, 303);
}
