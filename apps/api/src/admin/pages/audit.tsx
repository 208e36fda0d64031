/** @jsxImportSource hono/jsx */
import { auditActions } from '@cs/db';
import { ApiError } from '../../errors.ts';
import { requireAdmin } from '../../middleware/auth.ts';
import { auditQuery, auditView, parseAuditPage, readAudit } from '../../routes/audit.ts';
import type { AdminContext } from '../context.ts';
import { Pager, renderPage, when } from '../views.tsx';

/** `GET /admin/audit`: the audit trail, newest first, filtered as `GET /api/audit` filters it (admins only). */
export async function auditPage(c: AdminContext) {
  requireAdmin(c.var.caller);
  const raw = {
    actor: c.req.query('actor') || undefined,
    action: c.req.query('action') || undefined,
    target_id: c.req.query('target_id') || undefined,
    limit: c.req.query('limit'),
    cursor: c.req.query('cursor'),
  };
  const parsed = auditQuery.safeParse(raw);
  if (!parsed.success) {
    const fields = Object.fromEntries(parsed.error.issues.map((issue) => [String(issue.path[0]), issue.message]));
    throw new ApiError('validation_error', `Invalid request: ${Object.keys(fields).join(', ')}`, { fields });
  }
  const list = await readAudit(c.var.deps.db, parsed.data, parseAuditPage(parsed.data));
  const rows = list.items.map(auditView);
  return renderPage(
    c,
    'Audit',
    'audit',
    <>
      <h1>Audit trail</h1>
      <form class="bar" method="get" action="/admin/audit">
        <input name="actor" value={raw.actor ?? ''} placeholder="actor id or bootstrap" aria-label="Actor" />
        <select name="action" aria-label="Action">
          <option value="">every action</option>
          {auditActions.map((action) => (
            <option value={action} selected={raw.action === action}>
              {action}
            </option>
          ))}
        </select>
        <input name="target_id" value={raw.target_id ?? ''} placeholder="target id" aria-label="Target" />
        <button type="submit">Filter</button>
        <a href="/admin/audit">Show all</a>
      </form>
      <table>
        <thead>
          <tr>
            <th>When</th>
            <th>Who</th>
            <th>Action</th>
            <th>Target</th>
            <th>From</th>
            <th>Details</th>
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 && (
            <tr>
              <td colspan={6} class="muted">
                Nothing recorded{raw.actor || raw.action || raw.target_id ? ' that matches' : ''}.
              </td>
            </tr>
          )}
          {rows.map((row) => (
            <tr>
              <td>{when(new Date(row.at))}</td>
              <td>
                {row.actor.type === 'operator'
                  ? (row.actor.email ?? row.actor.id)
                  : row.actor.type === 'seller'
                    ? `seller ${row.actor.id}`
                    : 'bootstrap'}
              </td>
              <td>{row.action}</td>
              <td>
                {row.target_type} {row.target_id}
              </td>
              <td>{row.ip ?? ''}</td>
              <td>
                <code>{JSON.stringify(row.details)}</code>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager url={c.req.url} next={list.next_cursor} />
    </>,
  );
}
