/** @jsxImportSource hono/jsx */

import type { Reconciliation } from '@cs/ledger';
import { raw } from 'hono/html';
import type { Child } from 'hono/jsx';
import type { AdminContext } from './context.ts';
import { type Flash, takeFlash } from './flash.ts';
import { CSRF_FIELD } from './session.ts';

/** The frame, components and formatting every operator page shares; each page has its own file in `pages/`. */

/** Integer rials with thousands separators, exactly: no float ever touches the amount. */
export function rials(amount: bigint | string | number): string {
  const digits = BigInt(amount).toString();
  const sign = digits.startsWith('-') ? '-' : '';
  return sign + digits.slice(sign.length).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

export function when(date: Date | null): string {
  return date ? `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC` : '—';
}

const css = `
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232b;background:#f5f6f8}
header{display:flex;gap:1.25rem;align-items:center;padding:.6rem 1.5rem;background:#1f3a5f;color:#fff;flex-wrap:wrap}
header strong{margin-right:1rem}
header a{color:#dce8f7;text-decoration:none}
header a[aria-current]{color:#fff;font-weight:600;border-bottom:2px solid #fff}
header form{margin-left:auto}
main{max-width:1150px;margin:1.25rem auto;padding:0 1.5rem}
h1{font-size:1.35rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.5rem 0 .6rem}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #d9dde3}
th,td{padding:.45rem .6rem;border-bottom:1px solid #e6e8ec;text-align:left;vertical-align:middle}
th{background:#eef1f5;font-weight:600;font-size:.85rem}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:hover td{background:#fafbfc}
a{color:#1f5fa8}
button{font:inherit;padding:.3rem .75rem;border-radius:4px;border:1px solid #8c96a3;background:#fff;cursor:pointer}
button.approve{background:#1d7a46;border-color:#1d7a46;color:#fff}
button.reject{background:#fff;border-color:#b3261e;color:#b3261e}
button.primary{background:#1f3a5f;border-color:#1f3a5f;color:#fff}
header button{background:transparent;color:#dce8f7;border-color:#6d87a8}
input,select{font:inherit;padding:.3rem .45rem;border:1px solid #a3acb8;border-radius:4px}
.flash{padding:.65rem .9rem;border-radius:4px;margin-bottom:1rem;border:1px solid}
.flash.success{background:#e7f5ec;border-color:#9bd3b0}
.flash.warning{background:#fff6e0;border-color:#e9c46a}
.flash.error{background:#fdeceb;border-color:#e6a29d}
.bar{display:flex;gap:.6rem;align-items:center;flex-wrap:wrap;margin:.6rem 0}
.actions{display:flex;gap:.4rem;flex-wrap:nowrap}
.nowrap{white-space:nowrap}
.muted{color:#5f6b7a;font-size:.85rem}
.ok{color:#1d7a46;font-weight:600}
.bad{color:#b3261e;font-weight:600}
.pill{display:inline-block;padding:0 .5rem;border-radius:999px;font-size:.8rem;background:#e6e8ec}
.pill.pending{background:#fff1c2}.pill.approved{background:#d6f0df}.pill.rejected{background:#f9d9d6}
.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:.8rem 1rem;min-width:12rem}
.card .value{font-size:1.3rem;font-variant-numeric:tabular-nums}
.chart-box{background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:.4rem 1rem .8rem;margin:1rem 0}
.chart-box h2{margin:.4rem 0}
svg.chart{display:block;width:100%;height:auto}
.login{max-width:24rem;margin:12vh auto;background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:1.5rem}
.login input{width:100%;margin:.4rem 0 1rem}
code{font-size:.85em}
`;

type Section = 'overview' | 'requests' | 'deliveries' | 'sellers' | 'phones' | 'audit';

/** The whole HTML document; the only style is inline, and no page runs any script. */
export function Document(props: { title: string; children?: Child }) {
  return (
    <>
      {raw('<!doctype html>')}
      <html lang="en">
        <head>
          <meta charset="utf-8" />
          <meta name="viewport" content="width=device-width, initial-scale=1" />
          <title>{props.title} · Charge Sales operator</title>
          <style>{raw(css)}</style>
        </head>
        <body>{props.children}</body>
      </html>
    </>
  );
}

interface LayoutProps {
  title: string;
  section?: Section;
  /** The session's CSRF token, when signed in with a cookie (then a sign-out button is shown). */
  csrf?: string | undefined;
  /** Admins see the audit trail's page. */
  admin?: boolean;
  flash?: Flash | null;
  children?: Child;
}

export function Layout(props: LayoutProps) {
  const link = (section: Section, href: string, label: string) => (
    <a href={href} aria-current={props.section === section ? 'page' : undefined}>
      {label}
    </a>
  );
  return (
    <Document title={props.title}>
      <header>
        <strong>Charge Sales · operator</strong>
        {link('overview', '/admin', 'Overview')}
        {link('requests', '/admin/credit-requests', 'Credit requests')}
        {link('deliveries', '/admin/deliveries', 'Deliveries')}
        {link('sellers', '/admin/sellers', 'Sellers')}
        {link('phones', '/admin/phone-numbers', 'Phone numbers')}
        {props.admin && link('audit', '/admin/audit', 'Audit')}
        <a href="/admin/queues">Queue dashboard</a>
        {props.csrf !== undefined && (
          <>
            <form method="post" action="/admin/logout">
              <CsrfField token={props.csrf} />
              <button type="submit">Sign out</button>
            </form>
            <form method="post" action="/admin/sessions/revoke">
              <CsrfField token={props.csrf} />
              <button type="submit">Sign out everywhere</button>
            </form>
          </>
        )}
      </header>
      <main>
        {props.flash && (
          <div class={`flash ${props.flash.kind}`} role="status">
            {props.flash.text}
          </div>
        )}
        {props.children}
      </main>
    </Document>
  );
}

/** A page in the operator's frame: navigation, sign-out (for a cookie session) and the outcome of the last form. */
export function renderPage(c: AdminContext, title: string, section: Section, body: Child) {
  return c.html(
    <Layout
      title={title}
      section={section}
      csrf={c.var.session?.csrfToken}
      admin={c.var.caller.role === 'admin'}
      flash={takeFlash(c)}
    >
      {body}
    </Layout>,
  );
}

/** A figure in a card: a label over a value. */
export function Card(props: { label: Child; children: Child; balance?: boolean }) {
  return (
    <div class="card">
      <div class="muted">{props.label}</div>
      <div class="value" data-balance={props.balance ? '' : undefined}>
        {props.children}
      </div>
    </div>
  );
}

/** The session's CSRF token in a form; none with the bearer token, which needs none. */
export function CsrfField(props: { token: string | undefined }) {
  return props.token ? <input type="hidden" name={CSRF_FIELD} value={props.token} /> : null;
}

/**
 * "Newest" and "Older" links of a list paged the API's way: the same page with `?cursor=` the
 * list's `next_cursor`, every other parameter (filters, `limit`) kept.
 */
export function Pager(props: { url: string; next: string | null }) {
  const here = new URL(props.url);
  const at = (cursor: string | null) => {
    const url = new URL(here);
    if (cursor === null) url.searchParams.delete('cursor');
    else url.searchParams.set('cursor', cursor);
    return url.pathname + url.search;
  };
  return (
    <p class="bar">
      {here.searchParams.has('cursor') && <a href={at(null)}>« Newest</a>}
      {props.next !== null && <a href={at(props.next)}>Older »</a>}
    </p>
  );
}

/** Whether a seller's balance matches its ledger, and if not, how. */
export function ReconcileState(props: { check: Reconciliation | undefined }) {
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

/** Activate / Deactivate, then back to the page it was on. */
export function ActiveToggle(props: { id: string; isActive: boolean; csrf: string | undefined; back: string }) {
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
