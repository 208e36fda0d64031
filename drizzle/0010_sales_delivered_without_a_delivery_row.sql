-- A sale delivered at the first answer no longer writes a `deliveries` row: its job records the
-- delivery (result.delivery). The batch writes one hold per batch instead, the to-do list that
-- survives its process (see the schema's `deliveryHolds`): past held_until, any worker's stage
-- sweeps it, writing a row for each of its sales still `delivering` without one.
CREATE TABLE "delivery_holds" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "delivery_holds_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"job_ids" uuid[] NOT NULL,
	"provider" text NOT NULL,
	"held_until" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE INDEX "delivery_holds_held_until_idx" ON "delivery_holds" USING btree ("held_until");