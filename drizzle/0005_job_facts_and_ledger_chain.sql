ALTER TABLE "jobs" ALTER COLUMN "payload" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "amount" bigint;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "phone_number" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "credit_request_id" uuid;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "action" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "processed_by" text;--> statement-breakpoint
ALTER TABLE "sellers" ADD COLUMN "ledger_head" text;--> statement-breakpoint
ALTER TABLE "transactions" ADD COLUMN "hmac" text;--> statement-breakpoint
-- The facts a job applies move from the payload its queue message repeated into columns of their own.
UPDATE "jobs" SET "amount" = ("payload"->>'amount')::bigint, "phone_number" = "payload"->>'phoneNumber'
  WHERE "type" = 'charge_sale';--> statement-breakpoint
UPDATE "jobs" SET "credit_request_id" = ("payload"->>'creditRequestId')::uuid, "action" = "payload"->>'action',
  "processed_by" = "payload"->>'processedBy'
  WHERE "type" = 'credit_approval';--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_credit_request_id_credit_requests_id_fk" FOREIGN KEY ("credit_request_id") REFERENCES "public"."credit_requests"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_facts_of_type" CHECK (("jobs"."type" = 'charge_sale' and "jobs"."amount" is not null and "jobs"."amount" > 0
            and "jobs"."phone_number" is not null and "jobs"."phone_number" ~ '^09[0-9]{9}$'
            and "jobs"."credit_request_id" is null and "jobs"."action" is null and "jobs"."processed_by" is null)
       or ("jobs"."type" = 'credit_approval' and "jobs"."amount" is null and "jobs"."phone_number" is null
            and "jobs"."credit_request_id" is not null and "jobs"."action" is not null and "jobs"."action" in ('approve', 'reject')
            and "jobs"."processed_by" is not null and length("jobs"."processed_by") > 0));--> statement-breakpoint
ALTER TABLE "transactions" ADD CONSTRAINT "transactions_hmac_present" CHECK ("transactions"."hmac" is not null and "transactions"."hmac" ~ '^[0-9a-f]{64}$') NOT VALID;
-- NOT VALID: rows written before the chain carry no hmac. They stay, and reconcile reports the
-- first of them as where its seller's chain breaks; every new row must carry one.
