/** @jsxImportSource hono/jsx */

import { raw } from 'hono/html';
import type { Child } from 'hono/jsx';

/** Integer rials with thousands separators, exactly: no float ever touches the amount. */
export function rials(amount: bigint | string): string {
  const digits = BigInt(amount).toString();
  const sign = digits.startsWith('-') ? '-' : '';
  return sign + digits.slice(sign.length).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

export function when(date: Date | null): string {
  return date ? `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC` : '—';
}

export interface Flash {
  kind: 'success' | 'warning' | 'error';
  text: string;
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
.login{max-width:24rem;margin:12vh auto;background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:1.5rem}
.login input{width:100%;margin:.4rem 0 1rem}
code{font-size:.85em}
`;

type Section = 'requests' | 'sellers' | 'phones';

interface LayoutProps {
  title: string;
  section?: Section;
  /** The session's CSRF token, when signed in with a cookie (then a sign-out button is shown). */
  csrf?: string;
  flash?: Flash | null;
  children?: Child;
}

function Document(props: { title: string; children?: Child }) {
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
        {link('requests', '/admin', 'Credit requests')}
        {link('sellers', '/admin/sellers', 'Sellers')}
        {link('phones', '/admin/phone-numbers', 'Phone numbers')}
        <a href="/admin/queues">Queue dashboard</a>
        {props.csrf !== undefined && (
          <form method="post" action="/admin/logout">
            <CsrfField token={props.csrf} />
            <button type="submit">Sign out</button>
          </form>
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

export function CsrfField(props: { token: string | undefined }) {
  return props.token ? <input type="hidden" name="_csrf" value={props.token} /> : null;
}

export function loginPage(props: { csrf: string; next: string; error?: string | undefined }) {
  return (
    <Document title="Sign in">
      <main>
        <form class="login" method="post" action="/admin/login">
          <h1>Operator sign-in</h1>
          {props.error && (
            <div class="flash error" role="alert">
              {props.error}
            </div>
          )}
          <label for="token">Admin token</label>
          <input id="token" name="token" type="password" autocomplete="current-password" required autofocus />
          <input type="hidden" name="_csrf" value={props.csrf} />
          <input type="hidden" name="next" value={props.next} />
          <button class="primary" type="submit">
            Sign in
          </button>
          <p class="muted">The token is the ADMIN_TOKEN the API was started with. The session lasts 8 hours.</p>
        </form>
      </main>
    </Document>
  );
}

export function errorPage(props: { status: number; message: string }) {
  return (
    <Layout title={`Error ${props.status}`}>
      <h1>{props.status === 404 ? 'Not found' : `Something went wrong (${props.status})`}</h1>
      <p>{props.message}</p>
      <p>
        <a href="/admin">Back to the credit requests</a>
      </p>
    </Layout>
  );
}

/** "Newest" and "older" links for a newest-first list paged by `before` (the last key shown). */
export function Pager(props: {
  base: string;
  filters: Record<string, string | undefined>;
  paged: boolean;
  nextBefore: string | null;
}) {
  const href = (before?: string) => {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(props.filters)) if (value) query.set(key, value);
    if (before) query.set('before', before);
    const text = query.toString();
    return text ? `${props.base}?${text}` : props.base;
  };
  return (
    <p class="bar">
      {props.paged && <a href={href()}>« Newest</a>}
      {props.nextBefore !== null && <a href={href(props.nextBefore)}>Older »</a>}
    </p>
  );
}
