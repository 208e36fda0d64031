CREATE TABLE "credit_requests" (
	"id" uuid PRIMARY KEY NOT NULL,
	"seller_id" uuid NOT NULL,
	"amount" bigint NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"requested_at" timestamp with time zone DEFAULT now() NOT NULL,
	"processed_at" timestamp with time zone,
	"processed_by" text,
	CONSTRAINT "credit_requests_amount_positive" CHECK ("credit_requests"."amount" > 0),
	CONSTRAINT "credit_requests_status_valid" CHECK ("credit_requests"."status" in ('pending', 'approved', 'rejected')),
	CONSTRAINT "credit_requests_processed_iff_final" CHECK (("credit_requests"."status" = 'pending') = ("credit_requests"."processed_at" is null and "credit_requests"."processed_by" is null))
);
--> statement-breakpoint
CREATE TABLE "jobs" (
	"id" uuid PRIMARY KEY NOT NULL,
	"type" text NOT NULL,
	"seller_id" uuid NOT NULL,
	"partition" smallint NOT NULL,
	"status" text DEFAULT 'queued' NOT NULL,
	"payload" jsonb NOT NULL,
	"idempotency_key" text,
	"request_hash" text,
	"request_id" text,
	"result" jsonb,
	"error" jsonb,
	"submitted_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone,
	CONSTRAINT "jobs_seller_idempotency_key_unique" UNIQUE("seller_id","idempotency_key"),
	CONSTRAINT "jobs_type_valid" CHECK ("jobs"."type" in ('charge_sale', 'credit_approval')),
	CONSTRAINT "jobs_status_valid" CHECK ("jobs"."status" in ('queued', 'processing', 'succeeded', 'rejected', 'failed')),
	CONSTRAINT "jobs_finished_iff_final" CHECK (("jobs"."status" in ('succeeded', 'rejected', 'failed')) = ("jobs"."finished_at" is not null)),
	CONSTRAINT "jobs_idempotency_key_length" CHECK (length("jobs"."idempotency_key") between 1 and 255)
);
--> statement-breakpoint
CREATE TABLE "phone_numbers" (
	"number" text PRIMARY KEY NOT NULL,
	"total_charged" bigint DEFAULT 0 NOT NULL,
	"charge_count" bigint DEFAULT 0 NOT NULL,
	"seq" bigint GENERATED ALWAYS AS IDENTITY (sequence name "phone_numbers_seq_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "phone_numbers_seq_unique" UNIQUE("seq"),
	CONSTRAINT "phone_numbers_normalised" CHECK ("phone_numbers"."number" ~ '^09[0-9]{9}$'),
	CONSTRAINT "phone_numbers_totals_non_negative" CHECK ("phone_numbers"."total_charged" >= 0 and "phone_numbers"."charge_count" >= 0)
);
--> statement-breakpoint
CREATE TABLE "sellers" (
	"id" uuid PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"email" text NOT NULL,
	"phone" text NOT NULL,
	"api_key_hash" text NOT NULL,
	"credit_balance" bigint DEFAULT 0 NOT NULL,
	"is_active" boolean DEFAULT true NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "sellers_api_key_hash_unique" UNIQUE("api_key_hash"),
	CONSTRAINT "sellers_credit_balance_non_negative" CHECK ("sellers"."credit_balance" >= 0)
);
--> statement-breakpoint
CREATE TABLE "transactions" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "transactions_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"seller_id" uuid NOT NULL,
	"type" text NOT NULL,
	"amount" bigint NOT NULL,
	"balance_after" bigint NOT NULL,
	"job_id" uuid NOT NULL,
	"credit_request_id" uuid,
	"phone_number" text,
	"description" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "transactions_job_unique" UNIQUE("job_id"),
	CONSTRAINT "transactions_credit_request_unique" UNIQUE("credit_request_id"),
	CONSTRAINT "transactions_type_valid" CHECK ("transactions"."type" in ('charge_sale', 'credit_increase')),
	CONSTRAINT "transactions_amount_sign" CHECK (("transactions"."type" = 'charge_sale' and "transactions"."amount" < 0 and "transactions"."phone_number" is not null and "transactions"."credit_request_id" is null)
       or ("transactions"."type" = 'credit_increase' and "transactions"."amount" > 0 and "transactions"."credit_request_id" is not null and "transactions"."phone_number" is null)),
	CONSTRAINT "transactions_balance_after_non_negative" CHECK ("transactions"."balance_after" >= 0)
);
--> statement-breakpoint
ALTER TABLE "credit_requests" ADD CONSTRAINT "credit_requests_seller_id_sellers_id_fk" FOREIGN KEY ("seller_id") REFERENCES "public"."sellers"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_seller_id_sellers_id_fk" FOREIGN KEY ("seller_id") REFERENCES "public"."sellers"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "transactions" ADD CONSTRAINT "transactions_seller_id_sellers_id_fk" FOREIGN KEY ("seller_id") REFERENCES "public"."sellers"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "transactions" ADD CONSTRAINT "transactions_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "transactions" ADD CONSTRAINT "transactions_credit_request_id_credit_requests_id_fk" FOREIGN KEY ("credit_request_id") REFERENCES "public"."credit_requests"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "credit_requests_seller_idx" ON "credit_requests" USING btree ("seller_id","id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "credit_requests_status_idx" ON "credit_requests" USING btree ("status","id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "jobs_unfinished_idx" ON "jobs" USING btree ("partition","submitted_at") WHERE "jobs"."status" in ('queued', 'processing');--> statement-breakpoint
CREATE INDEX "jobs_seller_idx" ON "jobs" USING btree ("seller_id","id" DESC NULLS LAST);--> statement-breakpoint
CREATE UNIQUE INDEX "sellers_email_lower_unique" ON "sellers" USING btree (lower("email"));--> statement-breakpoint
CREATE INDEX "transactions_seller_idx" ON "transactions" USING btree ("seller_id","id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "transactions_seller_type_idx" ON "transactions" USING btree ("seller_id","type","id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "transactions_type_idx" ON "transactions" USING btree ("type","id" DESC NULLS LAST);