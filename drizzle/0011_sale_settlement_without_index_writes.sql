-- A sale's settlement (`delivering` → `succeeded`) changes no indexed column of `jobs` any more, so
-- PostgreSQL can write it as a HOT update: the new row version on the same page, no index entry.
-- The partial index of open jobs named `status`, which made every status change a new entry in
-- every index; it now says what "open" means without it (see `openJobCondition`), and a CHECK
-- holds the two definitions together. Jobs applied before `applied_at` existed get it first, from
-- when they finished, so that none of them counts as open.
UPDATE "jobs" SET "applied_at" = coalesce("finished_at", "submitted_at")
WHERE "applied_at" IS NULL AND "error" IS NULL AND "status" NOT IN ('queued', 'processing');--> statement-breakpoint
DROP INDEX "jobs_unfinished_idx";--> statement-breakpoint
CREATE INDEX "jobs_unfinished_idx" ON "jobs" USING btree ("partition","submitted_at") WHERE applied_at is null and error is null;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_open_iff_unapplied" CHECK (("jobs"."status" in ('queued', 'processing')) = (applied_at is null and error is null));--> statement-breakpoint
-- Room on each page for the versions a job goes through (recorded, applied, settled): an update
-- can be HOT only where its new version fits on the page of the old one.
ALTER TABLE "jobs" SET (fillfactor = 70);
