import type { Sql, TransactionSql } from 'postgres';
import { describeConnectionError } from './errors.ts';

/**
 * What the API and workers may do, table by table: read every table, insert rows, and update only
 * the columns the code updates. Nothing else: no DELETE (but of `delivery_holds`, a to-do list the
 * delivery stage empties, not a record), no TRUNCATE, no TRIGGER, no DDL, and no
 * UPDATE at all of `transactions`, the ledger, or of `audit_events`, the audit trail. The tables' owner (the migration role) keeps the
 * rest, so a compromised process cannot disable the ledger's trigger or rewrite history.
 */
const TABLE_PRIVILEGES: Record<string, { update: string[]; delete?: true }> = {
  sellers: { update: ['credit_balance', 'is_active', 'ledger_head', 'api_key_hash'] },
  jobs: { update: ['status', 'result', 'error', 'started_at', 'applied_at', 'finished_at'] },
  credit_requests: { update: ['status', 'processed_by', 'processed_at', 'first_approved_by', 'first_approved_at'] },
  transactions: { update: [] },
  phone_numbers: { update: ['total_charged', 'charge_count'] },
  operators: { update: ['role', 'is_active', 'token_hash'] },
  operator_sessions: { update: ['last_seen_at', 'ended_at'] },
  audit_events: { update: [] },
  deliveries: {
    update: [
      'status',
      'watching',
      'attempts',
      'next_attempt_at',
      'claimed_until',
      'provider_reference',
      'provider_reason',
      'last_error',
      'delivered_at',
      'gave_up_at',
      'resolution',
      'resolved_by',
      'resolved_at',
      'refund_transaction_id',
      'conflict_at',
      'updated_at',
    ],
  },
  webhook_endpoints: { update: ['url', 'secret', 'is_active', 'updated_at'] },
  webhook_deliveries: {
    update: [
      'status',
      'attempts',
      'last_status_code',
      'last_error',
      'next_attempt_at',
      'claimed_until',
      'delivered_at',
    ],
  },
  webhook_attempts: { update: [] },
  delivery_holds: { update: [], delete: true },
};
/**
 * Sequences the processes draw from: ledger ids are taken before the rows are sealed; audit rows
 * take theirs as they are inserted.
 */
const SEQUENCES = ['transactions_id_seq', 'audit_events_id_seq', 'webhook_attempts_id_seq', 'delivery_holds_id_seq'];

const ident = (name: string) => `"${name.replaceAll('"', '""')}"`;
const literal = (value: string) => `'${value.replaceAll("'", "''")}'`;

/** The role a database URL connects as, and its password. */
export function roleOf(url: string): { role: string; password: string } {
  const u = new URL(url);
  return { role: decodeURIComponent(u.username || 'postgres'), password: decodeURIComponent(u.password) };
}

/** The same database reached as another role: the application's URL beside the owner's. */
export function urlAsRole(url: string, role: string, password: string): string {
  const u = new URL(url);
  u.username = encodeURIComponent(role);
  u.password = encodeURIComponent(password);
  return u.toString();
}

/**
 * Session defaults of the application role in the application's database, applied by PostgreSQL
 * to every session the role opens there: direct, or a pooler's server connection (which logs in
 * as the client's role), whatever the driver sends. Nothing a client sets per session survives a
 * pooler in transaction mode, so these are set here, once, and nowhere else.
 *
 * `plan_cache_mode = force_custom_plan`: the processes prepare each statement once per connection,
 * and PostgreSQL would then settle on a generic plan made from the table sizes of that moment
 * (made on a fresh, empty `jobs` table, it scans the whole table for every job once the table has
 * grown); planning each execution keeps the plans fit for the data. Without prepared statements
 * (DATABASE_PREPARE=false) every execution is planned anyway, and the setting changes nothing.
 */
const ROLE_SETTINGS: Record<string, string> = { plan_cache_mode: 'force_custom_plan' };

/**
 * Makes sure the application role exists (LOGIN, with the password of its URL, when it is
 * created), holds exactly the privileges above on the current database, and has the session
 * defaults above there. Run by the owner after each migration, in one transaction, so running
 * processes never see a moment without their grants. A role's defaults reach new sessions only:
 * a pooler's server connections opened before the first migration keep theirs until they close.
 */
export async function grantApplicationRole(owner: Sql, applicationUrl: string): Promise<void> {
  const { role, password } = roleOf(applicationUrl);
  const [me] = await owner<[{ user: string }]>`select current_user as user`;
  if (me?.user === role) {
    // One URL for everything: nothing to split (a development setup), but the processes still
    // connect as this role, and a role may set its own defaults.
    await setRoleDefaults(owner, role);
    return;
  }
  await createRoleIfMissing(owner, role, password);

  const standing = await standingOf(owner, role);
  if (standing?.super) throw new Error(`role ${role} of DATABASE_URL is a superuser; use a role of its own`);
  if (standing?.owns) throw new Error(`role ${role} of DATABASE_URL owns tables; reassign them to the migration role`);

  const r = ident(role);
  const [{ db }] = await owner<[{ db: string }]>`select current_database() as db`;
  await owner.begin(async (tx) => {
    await tx.unsafe(`revoke create on schema public from public`);
    await tx.unsafe(`revoke temporary on database ${ident(db)} from public`);
    await tx.unsafe(`grant connect on database ${ident(db)} to ${r}`);
    await tx.unsafe(`revoke all on all tables in schema public from ${r}`);
    await tx.unsafe(`revoke all on all sequences in schema public from ${r}`);
    await tx.unsafe(`revoke all on schema public from ${r}`);
    await tx.unsafe(`grant usage on schema public to ${r}`);
    for (const [table, { update, delete: remove }] of Object.entries(TABLE_PRIVILEGES)) {
      await tx.unsafe(`grant select, insert${remove ? ', delete' : ''} on ${ident(table)} to ${r}`);
      if (update.length > 0)
        await tx.unsafe(`grant update (${update.map(ident).join(', ')}) on ${ident(table)} to ${r}`);
    }
    for (const sequence of SEQUENCES) await tx.unsafe(`grant usage on sequence ${ident(sequence)} to ${r}`);
    await setRoleDefaults(tx, role);
  });
}

/**
 * `ALTER ROLE … IN DATABASE … SET` for each of ROLE_SETTINGS the role lacks in the current
 * database. Scoped to this database, as the grants are: roles are shared by the whole server, and
 * another database's sessions of the same role are not ours to change. Already set, nothing is
 * written, so running the migration again changes nothing.
 */
async function setRoleDefaults(sql: Sql | TransactionSql, role: string): Promise<void> {
  const [{ db }] = await sql<[{ db: string }]>`select current_database() as db`;
  for (const [name, value] of Object.entries(ROLE_SETTINGS)) {
    const [{ set }] = await sql<[{ set: boolean }]>`
      select exists (select 1 from pg_db_role_setting s
                     join pg_roles r on r.oid = s.setrole
                     join pg_database d on d.oid = s.setdatabase
                     where r.rolname = ${role} and d.datname = ${db}
                       and ${`${name}=${value}`} = any(s.setconfig)) as set`;
    if (set) continue;
    try {
      await sql.unsafe(`alter role ${ident(role)} in database ${ident(db)} set ${name} = ${literal(value)}`);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(
        `cannot set ${name} = ${value} for role ${role} of DATABASE_URL (${reason}); ` +
          `a superuser can: ALTER ROLE ${ident(role)} IN DATABASE ${ident(db)} SET ${name} = ${value}`,
      );
    }
  }
}

async function createRoleIfMissing(owner: Sql, role: string, password: string): Promise<void> {
  const found = await owner`select 1 from pg_roles where rolname = ${role}`;
  if (found.length > 0) return;
  try {
    await owner.unsafe(`create role ${ident(role)} login${password ? ` password ${literal(password)}` : ''}`);
  } catch (error) {
    // Another migration created it at the same moment (roles are shared by the whole server).
    const code = (error as { code?: string }).code;
    if (code !== '42710' && code !== '23505') throw error;
  }
}

/**
 * What a running process checks about its own connection: a superuser, or the owner of the
 * tables, can undo every guarantee the privileges give (disable the ledger's trigger, drop it).
 */
export async function describeOverprivilegedRole(sql: Sql): Promise<string | null> {
  const [me] = await sql<[{ role: string }]>`select current_user as role`;
  const standing = me ? await standingOf(sql, me.role) : undefined;
  if (!me || !standing) return null;
  if (standing.super) return `DATABASE_URL connects as ${me.role}, a superuser`;
  if (standing.owns) return `DATABASE_URL connects as ${me.role}, the owner of the tables`;
  return null;
}

/**
 * Whether a role is a superuser, and whether it owns a table of ours. A member of the owning role
 * counts as its owner: PostgreSQL lets it do all the owner can.
 */
async function standingOf(sql: Sql, role: string): Promise<{ super: boolean; owns: boolean } | undefined> {
  const [row] = await sql<[{ super: boolean; owns: boolean }]>`
    select r.rolsuper as super,
           exists (select 1 from pg_class c where pg_has_role(r.oid, c.relowner, 'MEMBER')
                     and c.relnamespace = 'public'::regnamespace) as owns
    from pg_roles r where r.rolname = ${role}`;
  return row;
}

/**
 * Run by the API and workers at start. In production a superuser or owner connection is refused
 * with one line; elsewhere it is allowed with a warning, so a lone development DATABASE_URL works.
 */
export async function requireLeastPrivilege(
  sql: Sql,
  { production, who, url }: { production: boolean; who: string; url: string },
) {
  const problem = await describeOverprivilegedRole(sql).catch((error: unknown) => {
    console.error(`${who}: ${describeConnectionError(error, url)}`);
    process.exit(1);
  });
  if (!problem) return;
  if (production) {
    console.error(
      `${who}: ${problem}; connect as the application role (npm run db:migrate with MIGRATION_DATABASE_URL creates it)`,
    );
    process.exit(1);
  }
  console.error(`${who}: warning: ${problem}; production refuses this (see MIGRATION_DATABASE_URL)`);
}
