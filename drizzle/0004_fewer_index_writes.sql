ALTER TABLE "jobs" DROP CONSTRAINT "jobs_seller_idempotency_key_unique";--> statement-breakpoint
ALTER TABLE "transactions" DROP CONSTRAINT "transactions_credit_request_unique";--> statement-breakpoint
DROP INDEX "jobs_seller_idx";--> statement-breakpoint
CREATE UNIQUE INDEX "jobs_seller_idempotency_key_unique" ON "jobs" USING btree ("seller_id","idempotency_key") WHERE "jobs"."idempotency_key" is not null;--> statement-breakpoint
CREATE UNIQUE INDEX "transactions_credit_request_unique" ON "transactions" USING btree ("credit_request_id") WHERE "transactions"."credit_request_id" is not null;