ALTER TABLE "jobs" ADD COLUMN "queue_job_id" uuid;--> statement-breakpoint
-- Jobs accepted before this column each travelled in a message of their own, under their own id.
UPDATE "jobs" SET "queue_job_id" = "id";--> statement-breakpoint
ALTER TABLE "jobs" ALTER COLUMN "queue_job_id" SET NOT NULL;
