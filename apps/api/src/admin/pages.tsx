/** @jsxImportSource hono/jsx */
import { creditRequests, phoneNumbers, sellers, transactions } from '@cs/db';
import { normalisePhone, type Reconciliation, reconcile } from '@cs/ledger';
import { and, count, desc, eq, ilike, lt, or, sql, sum } from 'drizzle-orm';
import type { Hono } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import type { Child } from 'hono/jsx';
import { ApiError, notFound } from '../errors.ts';
import { callerName } from '../middleware/auth.ts';
import { isBigintId } from '../routes/sellers.ts';
import { isUuid } from '../schemas.ts';
import { type AdminContext, type AdminEnv, Form } from './context.ts';
import { type CreditAction, MAX_BATCH, processCreditRequests, summarise } from './process-requests.ts';
import { cookieOptions, safeNext } from './session.ts';
import { Card, CsrfField, type Flash, Layout, Pager, rials, when } from './views.tsx';

const PAGE_SIZE = 50;
const FLASH_COOKIE = 'cs_admin_flash';

/** The outcome of a form, carried across the redirect that follows it (post/redirect/get). */
function setFlash(c: AdminContext, flash: Flash) {
  const value = Buffer.from(JSON.stringify(flash)).toString('base64url');
  setCookie(c, FLASH_COOKIE, value, cookieOptions(c, '/admin', 60));
}

function takeFlash(c: AdminContext): Flash | null {
  const value = getCookie(c, FLASH_COOKIE);
  if (!value) return null;
  deleteCookie(c, FLASH_COOKIE, { path: '/admin' });
  try {
    const flash = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as Partial<Flash>;
    const kinds = ['success', 'warning', 'error'];
    return typeof flash.text === 'string' && kinds.includes(flash.kind ?? '') ? (flash as Flash) : null;
  } catch {
    return null;
  }
}

/** The page's frame: navigation, sign-out (for a cookie session) and the flash message. */
function page(c: AdminContext, title: string, section: 'requests' | 'sellers' | 'phones', body: Child) {
  return c.html(
    <Layout title={title} section={section} csrf={c.var.session?.csrfToken} flash={takeFlash(c)}>
      {body}
    </Layout>,
  );
}

const statusFilters = ['pending', 'approved', 'rejected', 'all'] as const;
type StatusFilter = (typeof statusFilters)[number];

function parseLimit(value: string | undefined): number {
  const n = Number(value);
  return Number.isInteger(n) && n >= 1 && n <= 500 ? n : PAGE_SIZE;
}

/** `?seller=` must name a seller: a malformed one is a 404, as on the API, never "show everything". */
function optionalId(value: string | undefined, what: string): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (!isUuid(value)) throw notFound(what);
  return value;
}

async function creditRequestsPage(c: AdminContext) {
  const { db } = c.var.deps;
  const query = c.req.query();
  const status: StatusFilter = statusFilters.find((s) => s === query.status) ?? 'pending';
  const sellerId = optionalId(query.seller, 'Seller');
  const before = query.before && isUuid(query.before) ? query.before : undefined;
  const rows = await db
    .select({ request: creditRequests, seller: sellers })
    .from(creditRequests)
    .innerJoin(sellers, eq(sellers.id, creditRequests.sellerId))
    .where(
      and(
        status === 'all' ? undefined : eq(creditRequests.status, status),
        sellerId ? eq(creditRequests.sellerId, sellerId) : undefined,
        before ? lt(creditRequests.id, before) : undefined,
      ),
    )
    .orderBy(desc(creditRequests.id))
    .limit(PAGE_SIZE + 1);
  const shown = rows.slice(0, PAGE_SIZE);
  const [pending] = await db
    .select({ count: count(), total: sum(creditRequests.amount) })
    .from(creditRequests)
    .where(eq(creditRequests.status, 'pending'));
  const anyPending = shown.some((r) => r.request.status === 'pending');
  const here = new URL(c.req.url);
  const csrf = c.var.session?.csrfToken;

  return page(
    c,
    'Credit requests',
    'requests',
    <>
      <h1>Credit requests</h1>
      <div class="cards">
        <Card label="Pending requests">{rials(BigInt(pending?.count ?? 0))}</Card>
        <Card label="Pending amount (rials)">{rials(pending?.total ?? '0')}</Card>
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
        <input type="hidden" name="return" value={here.pathname + here.search} />
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
            {shown.length === 0 && (
              <tr>
                <td colspan={7} class="muted">
                  No {status === 'all' ? '' : status} credit requests.
                </td>
              </tr>
            )}
            {shown.map(({ request, seller }) => (
              <tr data-request={request.id}>
                <td>
                  {request.status === 'pending' && (
                    <input type="checkbox" name="ids" value={request.id} aria-label={`Select ${seller.name}`} />
                  )}
                </td>
                <td class="nowrap">{when(request.requestedAt)}</td>
                <td>
                  <a href={`/admin/sellers/${seller.id}`}>{seller.name}</a>
                  {!seller.isActive && <span class="pill"> inactive</span>}
                  <div class="muted">{seller.email}</div>
                </td>
                <td class="num">{rials(request.amount)}</td>
                <td class="num">{rials(seller.creditBalance)}</td>
                <td>
                  <span class={`pill ${request.status}`}>{request.status}</span>
                </td>
                <td>
                  {request.status === 'pending' ? (
                    <span class="actions">
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
            ))}
          </tbody>
        </table>
      </form>
      <Pager
        base="/admin/credit-requests"
        filters={{ status, seller: sellerId }}
        paged={before !== undefined}
        nextBefore={rows.length > PAGE_SIZE ? (shown.at(-1)?.request.id ?? null) : null}
      />
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

async function processRequests(c: AdminContext) {
  const form = await Form.read(c);
  const back = safeNext(form.one('return'));
  const { action, ids } = readDecision(form);
  if (ids.length === 0) {
    setFlash(c, { kind: 'warning', text: 'Tick at least one request first.' });
    return c.redirect(back, 303);
  }
  const outcomes = await processCreditRequests(c.var.deps, ids, action, callerName(c.var.caller), c.var.requestId);
  setFlash(c, summarise(action, outcomes));
  return c.redirect(back, 303);
}

function ReconcileState(props: { check: Reconciliation | undefined }) {
  const check = props.check;
  if (!check) return <span class="muted">—</span>;
  if (check.isReconciled) return <span class="ok">✓ matches ledger</span>;
  const difference = check.currentBalance - check.calculatedFromTransactions;
  return (
    <span class="bad">
      ✗ {difference !== 0n ? `off by ${rials(difference)} rials` : ''}
      {check.brokenChainRows > 0 ? ` ${check.brokenChainRows} broken ledger rows` : ''}
      {check.chainBrokenAt !== null ? ` hash chain broken at row ${check.chainBrokenAt}` : ''}
    </span>
  );
}

function ActiveToggle(props: { id: string; isActive: boolean; csrf: string | undefined; back: string }) {
  return (
    <form method="post" action={`/admin/sellers/${props.id}/active`}>
      <CsrfField token={props.csrf} />
      <input type="hidden" name="return" value={props.back} />
      <input type="hidden" name="is_active" value={props.isActive ? 'false' : 'true'} />
      <button type="submit" class={props.isActive ? 'reject' : 'approve'}>
        {props.isActive ? 'Deactivate' : 'Activate'}
      </button>
    </form>
  );
}

/** `%` and `_` typed by the operator are searched for, not wildcards. */
const likePattern = (text: string) => `%${text.replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`;

async function sellersPage(c: AdminContext) {
  const { db, config } = c.var.deps;
  const ledgerKey = config.LEDGER_HMAC_KEY;
  const query = c.req.query();
  const search = query.q?.trim().slice(0, 200) || undefined;
  const before = query.before && isUuid(query.before) ? query.before : undefined;
  const rows = await db
    .select()
    .from(sellers)
    .where(
      and(
        search ? or(ilike(sellers.name, likePattern(search)), ilike(sellers.email, likePattern(search))) : undefined,
        before ? lt(sellers.id, before) : undefined,
      ),
    )
    .orderBy(desc(sellers.id))
    .limit(PAGE_SIZE + 1);
  const shown = rows.slice(0, PAGE_SIZE);
  const checks = new Map(
    (await Promise.all(shown.map((s) => reconcile(db, { ledgerKey, sellerId: s.id }))))
      .flat()
      .map((check) => [check.sellerId, check]),
  );
  const here = new URL(c.req.url);
  const csrf = c.var.session?.csrfToken;

  return page(
    c,
    'Sellers',
    'sellers',
    <>
      <h1>Sellers</h1>
      <form class="bar" method="get" action="/admin/sellers">
        <input type="search" name="q" value={search ?? ''} placeholder="Name or email" aria-label="Search sellers" />
        <button type="submit">Search</button>
        {search && <a href="/admin/sellers">Clear</a>}
      </form>
      <table>
        <thead>
          <tr>
            <th>Seller</th>
            <th>Phone</th>
            <th class="num">Balance (rials)</th>
            <th>Ledger check</th>
            <th>State</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {shown.length === 0 && (
            <tr>
              <td colspan={6} class="muted">
                No sellers{search ? ` matching “${search}”` : ''}.
              </td>
            </tr>
          )}
          {shown.map((seller) => (
            <tr data-seller={seller.id}>
              <td>
                <a href={`/admin/sellers/${seller.id}`}>{seller.name}</a>
                <div class="muted">{seller.email}</div>
              </td>
              <td>{seller.phone}</td>
              <td class="num" data-balance>
                {rials(seller.creditBalance)}
              </td>
              <td>
                <ReconcileState check={checks.get(seller.id)} />
              </td>
              <td>{seller.isActive ? 'active' : <span class="bad">inactive</span>}</td>
              <td>
                <ActiveToggle
                  id={seller.id}
                  isActive={seller.isActive}
                  csrf={csrf}
                  back={here.pathname + here.search}
                />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager
        base="/admin/sellers"
        filters={{ q: search }}
        paged={before !== undefined}
        nextBefore={rows.length > PAGE_SIZE ? (shown.at(-1)?.id ?? null) : null}
      />
    </>,
  );
}

async function findSeller(c: AdminContext) {
  const id = c.req.param('id') ?? '';
  if (!isUuid(id)) throw notFound('Seller');
  const [seller] = await c.var.deps.db.select().from(sellers).where(eq(sellers.id, id)).limit(1);
  if (!seller) throw notFound('Seller');
  return seller;
}

async function setActive(c: AdminContext) {
  const form = await Form.read(c);
  const value = form.one('is_active');
  if (value !== 'true' && value !== 'false') {
    throw new ApiError('validation_error', 'is_active must be true or false', {
      fields: { is_active: 'must be true or false' },
    });
  }
  const seller = await findSeller(c);
  const isActive = value === 'true';
  await c.var.deps.sellerKeys.setActive(seller.id, isActive);
  c.var.logger.info({ sellerId: seller.id, isActive }, 'seller activation changed by the operator');
  setFlash(c, {
    kind: 'success',
    text: isActive
      ? `${seller.name} is active: its sales are accepted again.`
      : `${seller.name} is inactive: its new sales are refused, and those still queued will be rejected.`,
  });
  return c.redirect(safeNext(form.one('return') ?? `/admin/sellers/${seller.id}`), 303);
}

const ledgerTypes = ['charge_sale', 'credit_increase'] as const;
const rowsLabel = (n: number) => `${rials(BigInt(n))} ${n === 1 ? 'row' : 'rows'}`;
const ledgerTypeLabel = { charge_sale: 'Charge sale', credit_increase: 'Credit increase' } as const;

async function sellerPage(c: AdminContext) {
  const { db } = c.var.deps;
  const seller = await findSeller(c);
  const query = c.req.query();
  const type = ledgerTypes.find((t) => t === query.type);
  const limit = parseLimit(query.limit);
  const before = query.before && isBigintId(query.before) ? query.before : undefined;
  const [check] = await reconcile(db, { ledgerKey: c.var.deps.config.LEDGER_HMAC_KEY, sellerId: seller.id });
  const rows = await db
    .select()
    .from(transactions)
    .where(
      and(
        eq(transactions.sellerId, seller.id),
        type ? eq(transactions.type, type) : undefined,
        before ? lt(transactions.id, BigInt(before)) : undefined,
      ),
    )
    .orderBy(desc(transactions.id))
    .limit(limit + 1);
  const shown = rows.slice(0, limit);
  const [pending] = await db
    .select({ count: count() })
    .from(creditRequests)
    .where(and(eq(creditRequests.sellerId, seller.id), eq(creditRequests.status, 'pending')));
  const here = new URL(c.req.url);

  return page(
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
          Credit requests of this seller ({pending?.count ?? 0} pending)
        </a>
        <ActiveToggle
          id={seller.id}
          isActive={seller.isActive}
          csrf={c.var.session?.csrfToken}
          back={here.pathname + here.search}
        />
      </div>
      <h2>Ledger</h2>
      <form class="bar" method="get" action={`/admin/sellers/${seller.id}`}>
        <label for="type">Type</label>
        <select id="type" name="type">
          <option value="">all</option>
          {ledgerTypes.map((t) => (
            <option value={t} selected={t === type}>
              {ledgerTypeLabel[t]}
            </option>
          ))}
        </select>
        <label for="limit">Rows</label>
        <select id="limit" name="limit">
          {[25, 50, 100, 500].map((n) => (
            <option value={String(n)} selected={n === limit}>
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
          {shown.length === 0 && (
            <tr>
              <td colspan={6} class="muted">
                No ledger rows{type ? ` of type ${ledgerTypeLabel[type]}` : ''}.
              </td>
            </tr>
          )}
          {shown.map((row) => (
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
      <Pager
        base={`/admin/sellers/${seller.id}`}
        filters={{ type, limit: limit === PAGE_SIZE ? undefined : String(limit) }}
        paged={before !== undefined}
        nextBefore={rows.length > limit ? (shown.at(-1)?.id.toString() ?? null) : null}
      />
    </>,
  );
}

async function phoneNumbersPage(c: AdminContext) {
  const { db } = c.var.deps;
  const query = c.req.query();
  const typed = query.number?.trim() || undefined;
  const number = typed ? normalisePhone(typed) : null;
  const before = query.before && isBigintId(query.before) ? query.before : undefined;
  const rows = typed
    ? number
      ? await db.select().from(phoneNumbers).where(eq(phoneNumbers.number, number))
      : []
    : await db
        .select()
        .from(phoneNumbers)
        .where(before ? lt(phoneNumbers.seq, BigInt(before)) : undefined)
        .orderBy(desc(phoneNumbers.seq))
        .limit(PAGE_SIZE + 1);
  const shown = rows.slice(0, PAGE_SIZE);
  const [totals] = await db
    .select({ numbers: count(), charged: sql<string>`coalesce(sum(${phoneNumbers.totalCharged}), 0)` })
    .from(phoneNumbers);

  return page(
    c,
    'Phone numbers',
    'phones',
    <>
      <h1>Phone numbers</h1>
      <div class="cards">
        <Card label="Numbers charged">{rials(BigInt(totals?.numbers ?? 0))}</Card>
        <Card label="Total charged (rials)">{rials(totals?.charged ?? '0')}</Card>
      </div>
      <form class="bar" method="get" action="/admin/phone-numbers">
        <input type="search" name="number" value={typed ?? ''} placeholder="09…" aria-label="Find a number" />
        <button type="submit">Find</button>
        {typed && <a href="/admin/phone-numbers">Show all</a>}
      </form>
      {typed && !number && (
        <div class="flash warning">“{typed}” is not an Iranian mobile number (09 and 9 digits).</div>
      )}
      <table>
        <thead>
          <tr>
            <th>Number</th>
            <th class="num">Total charged (rials)</th>
            <th class="num">Charges</th>
            <th>First charged</th>
          </tr>
        </thead>
        <tbody>
          {shown.length === 0 && (
            <tr>
              <td colspan={4} class="muted">
                {typed ? 'No charge has been sold to this number.' : 'No number has been charged yet.'}
              </td>
            </tr>
          )}
          {shown.map((row) => (
            <tr>
              <td>{row.number}</td>
              <td class="num">{rials(row.totalCharged)}</td>
              <td class="num">{rials(row.chargeCount)}</td>
              <td>{when(row.createdAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {!typed && (
        <Pager
          base="/admin/phone-numbers"
          filters={{}}
          paged={before !== undefined}
          nextBefore={rows.length > PAGE_SIZE ? (shown.at(-1)?.seq.toString() ?? null) : null}
        />
      )}
    </>,
  );
}

/** The operator pages: credit requests (home), sellers, a seller's ledger, phone numbers. */
export function registerOperatorPages(admin: Hono<AdminEnv>) {
  admin.get('/', creditRequestsPage);
  admin.get('/credit-requests', creditRequestsPage);
  admin.post('/credit-requests/process', processRequests);
  admin.get('/sellers', sellersPage);
  admin.get('/sellers/:id', sellerPage);
  admin.post('/sellers/:id/active', setActive);
  admin.get('/phone-numbers', phoneNumbersPage);
}
