/** @jsxImportSource hono/jsx */
import { normalisePhone } from '@cs/ledger';
import {
  findPhoneNumber,
  parsePhoneNumberPage,
  phoneNumberTotals,
  readPhoneNumbers,
} from '../../read-model/phone-numbers.ts';
import { type AdminContext, readPageQuery } from '../context.ts';
import { Card, Pager, renderPage, rials, when } from '../views.tsx';

/** `GET /admin/phone-numbers`: totals charged per number, newest first, or the one number looked up. */
export async function phoneNumbersPage(c: AdminContext) {
  const { db } = c.var.deps;
  const typed = c.req.query('number')?.trim() || undefined;
  const number = typed ? normalisePhone(typed) : null;
  const page = parsePhoneNumberPage(readPageQuery(c));
  const found = number ? await findPhoneNumber(db, number) : undefined;
  const list = typed ? { items: found ? [found] : [], next_cursor: null } : await readPhoneNumbers(db, page);
  const totals = await phoneNumberTotals(db);

  return renderPage(
    c,
    'Phone numbers',
    'phones',
    <>
      <h1>Phone numbers</h1>
      <div class="cards">
        <Card label="Numbers charged">{rials(totals.numbers)}</Card>
        <Card label="Total charged (rials)">{rials(totals.charged)}</Card>
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
          {list.items.length === 0 && (
            <tr>
              <td colspan={4} class="muted">
                {typed ? 'No charge has been sold to this number.' : 'No number has been charged yet.'}
              </td>
            </tr>
          )}
          {list.items.map((row) => (
            <tr>
              <td>{row.number}</td>
              <td class="num">{rials(row.totalCharged)}</td>
              <td class="num">{rials(row.chargeCount)}</td>
              <td>{when(row.createdAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager url={c.req.url} next={list.next_cursor} />
    </>,
  );
}
