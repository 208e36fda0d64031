CREATE TABLE "audit_events" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "audit_events_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"actor_type" text NOT NULL,
	"actor_id" uuid,
	"actor_email" text,
	"action" text NOT NULL,
	"target_type" text NOT NULL,
	"target_id" text NOT NULL,
	"ip" text,
	"details" jsonb DEFAULT '{}'::jsonb NOT NULL,
	CONSTRAINT "audit_events_actor_type_valid" CHECK ("audit_events"."actor_type" in ('operator', 'seller', 'bootstrap')),
	CONSTRAINT "audit_events_action_valid" CHECK ("audit_events"."action" in ('operator.created', 'operator.updated', 'operator.token_rotated', 'seller.created', 'seller.updated', 'seller.key_rotated', 'credit_request.approved', 'credit_request.second_approval_given', 'credit_request.rejected', 'delivery.resolved', 'webhook.updated', 'session.signed_in', 'session.sign_in_failed', 'session.signed_out'))
);
--> statement-breakpoint
CREATE TABLE "operator_sessions" (
	"id_hash" text PRIMARY KEY NOT NULL,
	"operator_id" uuid,
	"csrf_token" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_seen_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"ended_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "operators" (
	"id" uuid PRIMARY KEY NOT NULL,
	"email" text NOT NULL,
	"name" text NOT NULL,
	"role" text NOT NULL,
	"token_hash" text NOT NULL,
	"password_hash" text,
	"is_active" boolean DEFAULT true NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "operators_token_hash_unique" UNIQUE("token_hash"),
	CONSTRAINT "operators_role_valid" CHECK ("operators"."role" in ('admin', 'approver', 'viewer'))
);
--> statement-breakpoint
ALTER TABLE "credit_requests" DROP CONSTRAINT "credit_requests_status_valid";--> statement-breakpoint
ALTER TABLE "credit_requests" DROP CONSTRAINT "credit_requests_processed_iff_final";--> statement-breakpoint
ALTER TABLE "credit_requests" ADD COLUMN "first_approved_by" text;--> statement-breakpoint
ALTER TABLE "credit_requests" ADD COLUMN "first_approved_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "actor_id" uuid;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "actor_ip" text;--> statement-breakpoint
ALTER TABLE "operator_sessions" ADD CONSTRAINT "operator_sessions_operator_id_operators_id_fk" FOREIGN KEY ("operator_id") REFERENCES "public"."operators"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "audit_events_actor_idx" ON "audit_events" USING btree ("actor_id","id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "audit_events_action_idx" ON "audit_events" USING btree ("action","id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "audit_events_target_idx" ON "audit_events" USING btree ("target_id","id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "operator_sessions_operator_idx" ON "operator_sessions" USING btree ("operator_id") WHERE "operator_sessions"."ended_at" is null;--> statement-breakpoint
CREATE UNIQUE INDEX "operators_email_lower_unique" ON "operators" USING btree (lower("email"));--> statement-breakpoint
ALTER TABLE "credit_requests" ADD CONSTRAINT "credit_requests_first_approval_recorded" CHECK ("credit_requests"."status" <> 'awaiting_second_approval' or ("credit_requests"."first_approved_by" is not null and "credit_requests"."first_approved_at" is not null));--> statement-breakpoint
ALTER TABLE "credit_requests" ADD CONSTRAINT "credit_requests_status_valid" CHECK ("credit_requests"."status" in ('pending', 'awaiting_second_approval', 'approved', 'rejected'));--> statement-breakpoint
ALTER TABLE "credit_requests" ADD CONSTRAINT "credit_requests_processed_iff_final" CHECK (("credit_requests"."status" in ('pending', 'awaiting_second_approval')) = ("credit_requests"."processed_at" is null and "credit_requests"."processed_by" is null));--> statement-breakpoint
-- The audit trail is append-only, like the ledger: what happened is never rewritten.
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_events are append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$;
--> statement-breakpoint
CREATE TRIGGER audit_events_no_update_or_delete
  BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
--> statement-breakpoint
CREATE TRIGGER audit_events_no_truncate
  BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
