ALTER TABLE "deliveries" DROP CONSTRAINT "deliveries_job_id_jobs_id_fk";
--> statement-breakpoint
ALTER TABLE "deliveries" DROP CONSTRAINT "deliveries_seller_id_sellers_id_fk";
--> statement-breakpoint
ALTER TABLE "deliveries" DROP CONSTRAINT "deliveries_sale_transaction_id_transactions_id_fk";
--> statement-breakpoint
ALTER TABLE "jobs" DROP CONSTRAINT "jobs_seller_id_sellers_id_fk";
--> statement-breakpoint
ALTER TABLE "jobs" DROP CONSTRAINT "jobs_credit_request_id_credit_requests_id_fk";
--> statement-breakpoint
ALTER TABLE "transactions" DROP CONSTRAINT "transactions_seller_id_sellers_id_fk";
--> statement-breakpoint
ALTER TABLE "transactions" DROP CONSTRAINT "transactions_job_id_jobs_id_fk";
--> statement-breakpoint
ALTER TABLE "transactions" DROP CONSTRAINT "transactions_credit_request_id_credit_requests_id_fk";
--> statement-breakpoint
-- What the foreign keys dropped above checked is checked here at insert, once per statement, and
-- more strictly: not only that a row's job, seller, credit request or sale exists, but that it is
-- this row's own. A foreign key check also takes a row lock (FOR KEY SHARE) on every row it finds,
-- one lookup and one lock per inserted row and key, so that the row cannot be deleted or its key
-- changed before the insert commits. Here neither can happen: the application roles have no
-- DELETE and may not update a key column, the ledger refuses every change, and the owner's
-- deletes are refused by the last trigger below. (That trigger sees committed rows and its own:
-- an owner's delete in the same instant as an application's insert naming the row is not held
-- back, as a foreign key would have held it. Only the owner can delete, by hand.) The locks
-- bought nothing and cost about 15–30 µs per key and row: three keys on a delivery, two on a
-- sale's ledger row, one on a job.
CREATE FUNCTION jobs_name_their_seller() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM new_jobs j
    WHERE NOT EXISTS (SELECT 1 FROM sellers s WHERE s.id = j.seller_id)
       OR (j.credit_request_id IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM credit_requests r WHERE r.id = j.credit_request_id AND r.seller_id = j.seller_id))) THEN
    RAISE EXCEPTION 'a job must name an existing seller, and a credit approval a credit request of that seller'
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER jobs_name_their_seller
  AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION jobs_name_their_seller();
--> statement-breakpoint
-- A ledger row matches the job that wrote it: the job's seller; for a sale or its refund, the
-- job's amount and phone; for a credit increase, the job's credit request, of the same seller and
-- amount. (A refund's own sale is transactions_refund_matches_sale's.)
CREATE FUNCTION transactions_match_their_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM new_rows t LEFT JOIN jobs j ON j.id = t.job_id
    WHERE j.id IS NULL OR j.seller_id IS DISTINCT FROM t.seller_id
       OR (t.type IN ('charge_sale', 'charge_refund')
           AND (j.type IS DISTINCT FROM 'charge_sale' OR j.amount IS DISTINCT FROM abs(t.amount)
                OR j.phone_number IS DISTINCT FROM t.phone_number))
       OR (t.type = 'credit_increase'
           AND (j.type IS DISTINCT FROM 'credit_approval' OR j.credit_request_id IS DISTINCT FROM t.credit_request_id
                OR NOT EXISTS (SELECT 1 FROM credit_requests r
                               WHERE r.id = t.credit_request_id AND r.seller_id = t.seller_id AND r.amount = t.amount)))) THEN
    RAISE EXCEPTION 'a ledger row must match the job that wrote it (its seller, a sale''s amount and phone, a credit increase''s request)'
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER transactions_match_their_jobs
  AFTER INSERT ON transactions REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION transactions_match_their_jobs();
--> statement-breakpoint
-- A delivery is paid for: it names its own job's charge_sale row, with the same seller, phone and amount.
CREATE FUNCTION deliveries_name_their_sale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM new_rows d
    WHERE NOT EXISTS (
      SELECT 1 FROM transactions t
      WHERE t.id = d.sale_transaction_id AND t.type = 'charge_sale' AND t.job_id = d.job_id
        AND t.seller_id = d.seller_id AND t.phone_number = d.phone_number AND t.amount = -d.amount)) THEN
    RAISE EXCEPTION 'a delivery must name its own sale''s ledger row (same job, seller, phone and amount)'
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER deliveries_name_their_sale
  AFTER INSERT ON deliveries REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION deliveries_name_their_sale();
--> statement-breakpoint
-- What the dropped foreign keys also refused, the owner's too: deleting a seller, job or credit
-- request that others name, changing its id, or emptying the table while the ledger has rows.
-- (The application roles may do none of these at all.)
CREATE FUNCTION refuse_removing_what_is_named() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  named boolean;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    IF EXISTS (SELECT 1 FROM transactions)
       OR (TG_TABLE_NAME <> 'jobs' AND EXISTS (SELECT 1 FROM jobs)) THEN
      RAISE EXCEPTION '% cannot be truncated while the ledger or the jobs name its rows', TG_TABLE_NAME
        USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
  END IF;
  IF TG_OP = 'UPDATE' AND NEW.id = OLD.id THEN
    RETURN NEW;
  END IF;
  IF TG_TABLE_NAME = 'sellers' THEN
    named := EXISTS (SELECT 1 FROM jobs WHERE seller_id = OLD.id)
          OR EXISTS (SELECT 1 FROM transactions WHERE seller_id = OLD.id);
  ELSIF TG_TABLE_NAME = 'jobs' THEN
    named := EXISTS (SELECT 1 FROM transactions WHERE job_id = OLD.id)
          OR EXISTS (SELECT 1 FROM deliveries WHERE job_id = OLD.id);
  ELSE
    named := EXISTS (SELECT 1 FROM jobs WHERE credit_request_id = OLD.id)
          OR EXISTS (SELECT 1 FROM transactions WHERE credit_request_id = OLD.id);
  END IF;
  IF named THEN
    RAISE EXCEPTION '% % is named by other rows and cannot be removed or renumbered', TG_TABLE_NAME, OLD.id
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN COALESCE(NEW, OLD);
END;
$$;
--> statement-breakpoint
CREATE TRIGGER sellers_keep_what_is_named BEFORE DELETE OR UPDATE OF id ON sellers
  FOR EACH ROW EXECUTE FUNCTION refuse_removing_what_is_named();
--> statement-breakpoint
CREATE TRIGGER jobs_keep_what_is_named BEFORE DELETE OR UPDATE OF id ON jobs
  FOR EACH ROW EXECUTE FUNCTION refuse_removing_what_is_named();
--> statement-breakpoint
CREATE TRIGGER credit_requests_keep_what_is_named BEFORE DELETE OR UPDATE OF id ON credit_requests
  FOR EACH ROW EXECUTE FUNCTION refuse_removing_what_is_named();
--> statement-breakpoint
CREATE TRIGGER sellers_no_truncate_under_the_ledger BEFORE TRUNCATE ON sellers
  FOR EACH STATEMENT EXECUTE FUNCTION refuse_removing_what_is_named();
--> statement-breakpoint
CREATE TRIGGER jobs_no_truncate_under_the_ledger BEFORE TRUNCATE ON jobs
  FOR EACH STATEMENT EXECUTE FUNCTION refuse_removing_what_is_named();
--> statement-breakpoint
CREATE TRIGGER credit_requests_no_truncate_under_the_ledger BEFORE TRUNCATE ON credit_requests
  FOR EACH STATEMENT EXECUTE FUNCTION refuse_removing_what_is_named();
