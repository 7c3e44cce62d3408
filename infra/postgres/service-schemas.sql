-- Each service's own database on PostgreSQL: a login role per service and a schema of the
-- same name that the role owns. Postgres' default search_path ("$user", public) then puts
-- every table a service creates and reads in its own schema, and no role may use another's
-- (a schema is private to its owner until granted). The services' migrations refuse to run
-- when the role they connect as has no schema of its own (crates/service-kit/src/db.rs).
--
-- Run once per database, as a role that may create roles (idempotent):
--   psql -h HOST -U postgres -d shop -f infra/postgres/service-schemas.sql
-- then point each service at it as its own role: on Spin the variables
-- orders_database_url=postgres://shop_orders@HOST:5432/shop?sslmode=disable (and
-- balance_checker_, stock_checker_, vouchers_database_url), on wasmCloud each
-- <service>-postgres link's POSTGRES_USERNAME (wadm.yaml). Outside local runs set a
-- password on every role (ALTER ROLE shop_orders PASSWORD '...').
DO $$
DECLARE
  service TEXT;
BEGIN
  FOREACH service IN ARRAY ARRAY['shop_orders', 'shop_balance_checker', 'shop_stock_checker', 'shop_vouchers'] LOOP
    BEGIN
      EXECUTE format('CREATE ROLE %I LOGIN', service);
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL; -- roles belong to the server: another database (or a concurrent run) made it
    END;
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', service, service);
  END LOOP;
END $$;
-- PostgreSQL before 15 lets every role create tables in `public`: no service may.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
