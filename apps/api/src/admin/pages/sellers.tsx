/** @jsxImportSource hono/jsx */
import { reconcile } from '@cs/ledger';
import { parseSellerPage, readSellers } from '../../read-model/sellers.ts';
import { type AdminContext, readPageQuery, thisPage } from '../context.ts';
import { ActiveToggle, Pager, ReconcileState, renderPage, rials } from '../views.tsx';

/** `GET /admin/sellers`: every seller with its balance and whether that matches its ledger; search by name or email. */
export async function sellersPage(c: AdminContext) {
  const { db, config } = c.var.deps;
  const search = c.req.query('q')?.trim().slice(0, 200) || undefined;
  const sellers = await readSellers(db, { search }, parseSellerPage(readPageQuery(c)));
  const checks = new Map(
    (await Promise.all(sellers.items.map((s) => reconcile(db, { ledgerKey: config.LEDGER_HMAC_KEY, sellerId: s.id }))))
      .flat()
      .map((check) => [check.sellerId, check]),
  );
  const csrf = c.var.session?.csrfToken;

  return renderPage(
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
          {sellers.items.length === 0 && (
            <tr>
              <td colspan={6} class="muted">
                No sellers{search ? ` matching “${search}”` : ''}.
              </td>
            </tr>
          )}
          {sellers.items.map((seller) => (
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
                <ActiveToggle id={seller.id} isActive={seller.isActive} csrf={csrf} back={thisPage(c)} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager url={c.req.url} next={sellers.next_cursor} />
    </>,
  );
}
