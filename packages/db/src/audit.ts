import type { Database } from './client.ts';
import { auditEvents } from './schema/audit.ts';
import type { ActorType, AuditAction } from './schema/vocabulary.ts';

/** Who acted: from the credentials of the request that caused the effect. */
export interface Actor {
  type: ActorType;
  /** The operator's or seller's id; null for the bootstrap admin. */
  id: string | null;
  email: string | null;
}

/** One row of the audit trail, as the code that causes an effect describes it. */
export interface AuditEntry {
  actor: Actor;
  action: AuditAction;
  targetType: string;
  targetId: string;
  ip: string | null;
  details?: Record<string, unknown>;
}

/** The entry as the `audit_events` table's columns (for an insert inside the effect's transaction). */
export function auditRow(entry: AuditEntry) {
  return {
    actorType: entry.actor.type,
    actorId: entry.actor.id,
    actorEmail: entry.actor.email,
    action: entry.action,
    targetType: entry.targetType,
    targetId: entry.targetId,
    ip: entry.ip,
    details: entry.details ?? {},
  };
}

/**
 * Writes an entry with no effect of its own (a refused sign-in) in a transaction of its own. An
 * entry that records an effect is inserted in the effect's transaction instead (`auditRow`).
 */
export async function recordAudit(db: Database, entry: AuditEntry): Promise<void> {
  await db.insert(auditEvents).values(auditRow(entry));
}
