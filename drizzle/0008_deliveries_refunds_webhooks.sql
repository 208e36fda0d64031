CREATE TABLE "deliveries" (
	"job_id" uuid PRIMARY KEY NOT NULL,
	"seller_id" uuid NOT NULL,
	"partition" smallint NOT NULL,
	"sale_transaction_id" bigint NOT NULL,
	"phone_number" text NOT NULL,
	"amount" bigint NOT NULL,
	"provider" text NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"watching" boolean DEFAULT true NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone DEFAULT now() NOT NULL,
	"claimed_until" timestamp with time zone,
	"provider_reference" text,
	"provider_reason" text,
	"last_error" text,
	"debited_at" timestamp with time zone DEFAULT now() NOT NULL,
	"delivered_at" timestamp with time zone,
	"gave_up_at" timestamp with time zone,
	"resolution" text,
	"resolved_by" text,
	"resolved_at" timestamp with time zone,
	"refund_transaction_id" bigint,
	"conflict_at" timestamp with time zone,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "deliveries_status_valid" CHECK ("deliveries"."status" in ('pending', 'unresolved', 'refund_due', 'delivered', 'refunded', 'conflict')),
	CONSTRAINT "deliveries_resolution_valid" CHECK ("deliveries"."resolution" is null or "deliveries"."resolution" in ('delivered', 'refund')),
	CONSTRAINT "deliveries_amount_positive" CHECK ("deliveries"."amount" > 0),
	CONSTRAINT "deliveries_refunded_has_refund" CHECK ("deliveries"."status" <> 'refunded' or "deliveries"."refund_transaction_id" is not null),
	CONSTRAINT "deliveries_resolved_recorded" CHECK (("deliveries"."resolution" is null) = ("deliveries"."resolved_by" is null and "deliveries"."resolved_at" is null)),
	CONSTRAINT "deliveries_delivered_recorded" CHECK ("deliveries"."status" <> 'delivered' or "deliveries"."delivered_at" is not null),
	CONSTRAINT "deliveries_unresolved_recorded" CHECK ("deliveries"."status" <> 'unresolved' or "deliveries"."gave_up_at" is not null),
	CONSTRAINT "deliveries_refund_has_reason" CHECK ("deliveries"."status" not in ('refund_due', 'refunded') or "deliveries"."provider_reason" is not null),
	CONSTRAINT "deliveries_conflict_recorded" CHECK ("deliveries"."status" <> 'conflict' or ("deliveries"."resolution" is not null and "deliveries"."conflict_at" is not null))
);
--> statement-breakpoint
CREATE TABLE "webhook_attempts" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "webhook_attempts_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"delivery_id" text NOT NULL,
	"attempted_at" timestamp with time zone DEFAULT now() NOT NULL,
	"status_code" integer,
	"error" text,
	"duration_ms" integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_deliveries" (
	"id" text PRIMARY KEY NOT NULL,
	"seller_id" uuid NOT NULL,
	"event_type" text NOT NULL,
	"payload" jsonb NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"last_status_code" integer,
	"last_error" text,
	"next_attempt_at" timestamp with time zone DEFAULT now() NOT NULL,
	"claimed_until" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"delivered_at" timestamp with time zone,
	CONSTRAINT "webhook_deliveries_status_valid" CHECK ("webhook_deliveries"."status" in ('pending', 'delivered', 'failed')),
	CONSTRAINT "webhook_deliveries_event_type_valid" CHECK ("webhook_deliveries"."event_type" in ('charge_sale.succeeded', 'charge_sale.rejected', 'credit_request.approved', 'credit_request.rejected'))
);
--> statement-breakpoint
CREATE TABLE "webhook_endpoints" (
	"seller_id" uuid PRIMARY KEY NOT NULL,
	"url" text NOT NULL,
	"secret" text NOT NULL,
	"is_active" boolean DEFAULT true NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "transactions" DROP CONSTRAINT "transactions_job_unique";--> statement-breakpoint
ALTER TABLE "jobs" DROP CONSTRAINT "jobs_status_valid";--> statement-breakpoint
ALTER TABLE "transactions" DROP CONSTRAINT "transactions_type_valid";--> statement-breakpoint
ALTER TABLE "transactions" DROP CONSTRAINT "transactions_amount_sign";--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "applied_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "transactions" ADD COLUMN "refund_of" bigint;--> statement-breakpoint
ALTER TABLE "deliveries" ADD CONSTRAINT "deliveries_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "deliveries" ADD CONSTRAINT "deliveries_seller_id_sellers_id_fk" FOREIGN KEY ("seller_id") REFERENCES "public"."sellers"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "deliveries" ADD CONSTRAINT "deliveries_sale_transaction_id_transactions_id_fk" FOREIGN KEY ("sale_transaction_id") REFERENCES "public"."transactions"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "deliveries" ADD CONSTRAINT "deliveries_refund_transaction_id_transactions_id_fk" FOREIGN KEY ("refund_transaction_id") REFERENCES "public"."transactions"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_attempts" ADD CONSTRAINT "webhook_attempts_delivery_id_webhook_deliveries_id_fk" FOREIGN KEY ("delivery_id") REFERENCES "public"."webhook_deliveries"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_deliveries" ADD CONSTRAINT "webhook_deliveries_seller_id_sellers_id_fk" FOREIGN KEY ("seller_id") REFERENCES "public"."sellers"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_endpoints" ADD CONSTRAINT "webhook_endpoints_seller_id_sellers_id_fk" FOREIGN KEY ("seller_id") REFERENCES "public"."sellers"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "deliveries_due_idx" ON "deliveries" USING btree ("next_attempt_at") WHERE "deliveries"."watching";--> statement-breakpoint
CREATE INDEX "deliveries_attention_idx" ON "deliveries" USING btree ("status","job_id" DESC NULLS LAST) WHERE "deliveries"."status" in ('unresolved', 'conflict', 'refund_due');--> statement-breakpoint
CREATE INDEX "webhook_attempts_delivery_idx" ON "webhook_attempts" USING btree ("delivery_id","id");--> statement-breakpoint
CREATE INDEX "webhook_deliveries_seller_idx" ON "webhook_deliveries" USING btree ("seller_id","id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "webhook_deliveries_due_idx" ON "webhook_deliveries" USING btree ("next_attempt_at") WHERE "webhook_deliveries"."status" = 'pending';--> statement-breakpoint
ALTER TABLE "transactions" ADD CONSTRAINT "transactions_refund_of_transactions_id_fk" FOREIGN KEY ("refund_of") REFERENCES "public"."transactions"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "transactions_job_unique" ON "transactions" USING btree ("job_id") WHERE "transactions"."type" <> 'charge_refund';--> statement-breakpoint
CREATE UNIQUE INDEX "transactions_refund_of_unique" ON "transactions" USING btree ("refund_of") WHERE "transactions"."refund_of" is not null;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_status_valid" CHECK ("jobs"."status" in ('queued', 'processing', 'delivering', 'succeeded', 'rejected', 'failed'));--> statement-breakpoint
ALTER TABLE "transactions" ADD CONSTRAINT "transactions_type_valid" CHECK ("transactions"."type" in ('charge_sale', 'credit_increase', 'charge_refund'));--> statement-breakpoint
ALTER TABLE "transactions" ADD CONSTRAINT "transactions_amount_sign" CHECK (("transactions"."type" = 'charge_sale' and "transactions"."amount" < 0 and "transactions"."phone_number" is not null and "transactions"."credit_request_id" is null and "transactions"."refund_of" is null)
       or ("transactions"."type" = 'credit_increase' and "transactions"."amount" > 0 and "transactions"."credit_request_id" is not null and "transactions"."phone_number" is null and "transactions"."refund_of" is null)
       or ("transactions"."type" = 'charge_refund' and "transactions"."amount" > 0 and "transactions"."phone_number" is not null and "transactions"."credit_request_id" is null and "transactions"."refund_of" is not null));--> statement-breakpoint
-- A refund gives back exactly one sale, whole: the same seller's, written by the same job, for the
-- same amount. The CHECK and the unique index above hold the rest (a refund names a sale, once).
CREATE FUNCTION transactions_refund_matches_sale() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  sale transactions%ROWTYPE;
BEGIN
  SELECT * INTO sale FROM transactions WHERE id = NEW.refund_of;
  IF NOT FOUND OR sale.type <> 'charge_sale' OR sale.seller_id <> NEW.seller_id
     OR sale.job_id <> NEW.job_id OR sale.amount <> -NEW.amount OR sale.phone_number <> NEW.phone_number THEN
    RAISE EXCEPTION 'a charge_refund must give back its own sale, whole (refund_of %)', NEW.refund_of
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER transactions_refund_matches_sale
  BEFORE INSERT ON transactions
  FOR EACH ROW WHEN (NEW.type = 'charge_refund')
  EXECUTE FUNCTION transactions_refund_matches_sale();
