-- apprun schema: idempotent, applied by `apprun-stack up` (and the tests)
-- as the database owner.  The gateway connects as apprun_gateway, a role
-- that owns nothing, is not a superuser and cannot bypass RLS, so
-- PostgreSQL itself refuses rows of another tenant.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'apprun_gateway') THEN
    CREATE ROLE apprun_gateway LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
  END IF;
END
$$;

-- The caller's tenant, read from the claims the gateway sets per
-- transaction with set_config('request.jwt.claims', ..., true).  NULL when
-- no claims are set, which matches no row.
CREATE OR REPLACE FUNCTION app_tenant_id() RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT (nullif(current_setting('request.jwt.claims', true), '')::json ->> 'tenant_id')::uuid
$$;

CREATE TABLE IF NOT EXISTS tenants (
  id          uuid PRIMARY KEY,
  name        text NOT NULL,
  plan        text NOT NULL DEFAULT 'free',
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS users (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid NOT NULL DEFAULT app_tenant_id() REFERENCES tenants(id),
  email         text NOT NULL,
  password_hash text NOT NULL,
  role          text NOT NULL CHECK (role IN ('admin', 'user')),
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));

CREATE TABLE IF NOT EXISTS products (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL DEFAULT app_tenant_id() REFERENCES tenants(id),
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  price       numeric(12, 2) NOT NULL CHECK (price >= 0),
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS products_tenant_created ON products (tenant_id, created_at);

CREATE TABLE IF NOT EXISTS projects (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL DEFAULT app_tenant_id() REFERENCES tenants(id),
  name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  owner_email  text,
  workflow_id  text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, workflow_id)
);

-- What a mailer would drain; the welcome-email activity writes here.
CREATE TABLE IF NOT EXISTS email_outbox (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL DEFAULT app_tenant_id() REFERENCES tenants(id),
  recipient    text NOT NULL,
  subject      text NOT NULL,
  body         text NOT NULL,
  workflow_id  text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  sent_at      timestamptz,
  UNIQUE (tenant_id, workflow_id)
);

CREATE TABLE IF NOT EXISTS functions (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL DEFAULT app_tenant_id() REFERENCES tenants(id),
  name         text NOT NULL CHECK (name ~ '^[a-z0-9_-]{1,64}$'),
  digest       text NOT NULL,
  module       bytea NOT NULL,
  size_bytes   integer NOT NULL,
  exports      jsonb NOT NULL,
  limits       jsonb NOT NULL DEFAULT '{}'::jsonb,
  version      integer NOT NULL DEFAULT 1,
  created_at   timestamptz NOT NULL DEFAULT now(),
  deployed_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name)
);

CREATE TABLE IF NOT EXISTS workflow_executions (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id      uuid NOT NULL DEFAULT app_tenant_id() REFERENCES tenants(id),
  workflow_id    text NOT NULL UNIQUE,
  run_id         text,
  workflow_type  text NOT NULL,
  status         text NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'completed', 'failed')),
  attempts       integer NOT NULL DEFAULT 0,
  input          jsonb,
  result         jsonb,
  error          text,
  started_at     timestamptz NOT NULL DEFAULT now(),
  ended_at       timestamptz,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS workflow_executions_tenant_started
  ON workflow_executions (tenant_id, started_at DESC);

-- Length limits on every free text column (products.name, projects.name
-- and functions.name have theirs inline), so no client can store (and
-- then make every reader fetch) megabytes in one field.  Named
-- <table>_<column>_length; a violation is SQLSTATE 23514, which the gateway
-- answers with a 400.  Added when missing, so an existing database gets
-- them at the next `apprun-stack up`; NOT VALID so that an older, longer
-- row does not stop the upgrade (new and changed rows are checked).
DO $$
DECLARE
  limit_ record;
BEGIN
  FOR limit_ IN SELECT * FROM (VALUES
      ('tenants', 'name', 200), ('tenants', 'plan', 32),
      ('users', 'email', 320), ('users', 'password_hash', 512),
      ('projects', 'owner_email', 320), ('projects', 'workflow_id', 200),
      ('email_outbox', 'recipient', 320), ('email_outbox', 'subject', 500),
      ('email_outbox', 'body', 20000), ('email_outbox', 'workflow_id', 200),
      ('functions', 'digest', 128),
      ('workflow_executions', 'workflow_id', 200), ('workflow_executions', 'run_id', 200),
      ('workflow_executions', 'workflow_type', 100), ('workflow_executions', 'error', 10000)
    ) AS l(table_name, column_name, max_chars)
  LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = limit_.table_name || '_' || limit_.column_name || '_length'
                     AND conrelid = format('public.%I', limit_.table_name)::regclass) THEN
      EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (char_length(%I) <= %s) NOT VALID',
                     limit_.table_name, limit_.table_name || '_' || limit_.column_name || '_length',
                     limit_.column_name, limit_.max_chars);
    END IF;
  END LOOP;
END
$$;

-- The data API checks a statement's own result inside the statement (the
-- singular object, max-affected, the response size): this raises, so the
-- statement's writes roll back with it.  The SQLSTATEs (class DA) are
-- mapped back to HTTP errors by gateway/pgerrors.py.
CREATE OR REPLACE FUNCTION data_api_refuse(p_sqlstate text, p_message text, p_detail text)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message, DETAIL = p_detail;
END
$$;

-- Row-level security: every tenant table, forced even for the owner.  One
-- procedure for every tenant table (the storage tables below use it too).
CREATE OR REPLACE PROCEDURE apply_tenant_isolation(tables text[])
LANGUAGE plpgsql AS $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY tables LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
    -- (SELECT app_tenant_id()) is evaluated once per statement, not per row.
    EXECUTE format('CREATE POLICY tenant_isolation ON %I
                      USING (tenant_id = (SELECT app_tenant_id()))
                      WITH CHECK (tenant_id = (SELECT app_tenant_id()))', t);
  END LOOP;
END
$$;
REVOKE ALL ON PROCEDURE apply_tenant_isolation(text[]) FROM PUBLIC;
CALL apply_tenant_isolation(ARRAY['users', 'products', 'projects', 'email_outbox',
                                  'functions', 'workflow_executions']);

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON tenants;
CREATE POLICY tenant_isolation ON tenants USING (id = (SELECT app_tenant_id()));

-- Views run with the caller's rights (security_invoker), so RLS applies.
CREATE OR REPLACE VIEW tenant_stats WITH (security_invoker = true) AS
SELECT t.id AS tenant_id,
       t.name,
       t.plan,
       (SELECT count(*) FROM users u WHERE u.tenant_id = t.id) AS users,
       (SELECT count(*) FROM products p WHERE p.tenant_id = t.id) AS products,
       (SELECT count(*) FROM projects p WHERE p.tenant_id = t.id) AS projects,
       (SELECT count(*) FROM functions f WHERE f.tenant_id = t.id) AS functions,
       (SELECT count(*) FROM workflow_executions w WHERE w.tenant_id = t.id) AS workflow_runs
FROM tenants t;

CREATE OR REPLACE VIEW workflow_execution_stats WITH (security_invoker = true) AS
SELECT tenant_id,
       workflow_type,
       count(*) AS runs,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'running') AS running,
       coalesce(sum(attempts), 0) AS attempts,
       round(avg(extract(epoch FROM ended_at - started_at))::numeric, 3) AS mean_duration_s
FROM workflow_executions
GROUP BY tenant_id, workflow_type;

-- Login must find a user before any tenant is known: a narrow SECURITY
-- DEFINER lookup instead of opening the users table.
CREATE OR REPLACE FUNCTION auth_lookup_user(p_email text)
RETURNS TABLE (id uuid, tenant_id uuid, email text, role text, password_hash text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT u.id, u.tenant_id, u.email, u.role, u.password_hash
  FROM users u WHERE lower(u.email) = lower(p_email)
$$;
-- SECURITY DEFINER runs as the owner; FORCE RLS would still hide rows from
-- it, so the owner gets a policy of its own for this lookup only.
DROP POLICY IF EXISTS owner_login_lookup ON users;
CREATE POLICY owner_login_lookup ON users FOR SELECT TO CURRENT_USER USING (true);

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM apprun_gateway;
GRANT USAGE ON SCHEMA public TO apprun_gateway;
GRANT SELECT ON tenants TO apprun_gateway;
GRANT SELECT (id, tenant_id, email, role, created_at) ON users TO apprun_gateway;
GRANT INSERT (tenant_id, email, password_hash, role) ON users TO apprun_gateway;
GRANT SELECT, INSERT, UPDATE, DELETE ON products, projects, functions TO apprun_gateway;
GRANT SELECT, INSERT, UPDATE ON email_outbox, workflow_executions TO apprun_gateway;
GRANT SELECT ON tenant_stats, workflow_execution_stats TO apprun_gateway;
REVOKE ALL ON FUNCTION auth_lookup_user(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth_lookup_user(text) TO apprun_gateway;
GRANT EXECUTE ON FUNCTION app_tenant_id() TO apprun_gateway;
GRANT EXECUTE ON FUNCTION data_api_refuse(text, text, text) TO apprun_gateway;

INSERT INTO tenants (id, name, plan) VALUES
  ('11111111-1111-1111-1111-111111111111', 'Test Tenant 1', 'free'),
  ('22222222-2222-2222-2222-222222222222', 'Test Tenant 2', 'pro')
ON CONFLICT (id) DO NOTHING;

-- The workflow worker polls one activity task queue per tenant, sized by the
-- tenant's plan (gateway/budgets.py, gateway/workflows/tenant_workers.py):
-- it needs every tenant's id and plan and nothing else, before any tenant's
-- claims are known, hence a narrow SECURITY DEFINER function.
CREATE OR REPLACE FUNCTION budget_tenant_plans()
RETURNS TABLE (id uuid, plan text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT t.id, t.plan FROM tenants t
$$;
DROP POLICY IF EXISTS owner_plan_lookup ON tenants;
CREATE POLICY owner_plan_lookup ON tenants FOR SELECT TO CURRENT_USER USING (true);
REVOKE ALL ON FUNCTION budget_tenant_plans() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION budget_tenant_plans() TO apprun_gateway;
-- ---------------------------------------------------------------------
-- Object storage (/storage/v1): metadata here under RLS, bytes on the
-- gateway's backend (files or S3) under an opaque storage_key.
-- ---------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS storage_buckets (
  tenant_id           uuid NOT NULL DEFAULT app_tenant_id() REFERENCES tenants(id),
  id                  text NOT NULL CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
  name                text NOT NULL,
  owner               text NOT NULL DEFAULT '',
  public              boolean NOT NULL DEFAULT false,
  file_size_limit     bigint CHECK (file_size_limit IS NULL OR file_size_limit > 0),
  allowed_mime_types  text[],
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)   -- bucket ids are unique per tenant only
);

CREATE TABLE IF NOT EXISTS storage_objects (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id         uuid NOT NULL DEFAULT app_tenant_id(),
  bucket_id         text NOT NULL,
  -- "C" collation: byte order, so prefix LIKE uses the unique index.
  name              text COLLATE "C" NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 1024),
  storage_key       text NOT NULL UNIQUE,
  size              bigint NOT NULL CHECK (size >= 0),
  mimetype          text NOT NULL,
  cache_control     text,
  etag              text NOT NULL,
  user_metadata     jsonb,
  owner             text NOT NULL DEFAULT '',
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  last_accessed_at  timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (tenant_id, bucket_id) REFERENCES storage_buckets (tenant_id, id),
  UNIQUE (tenant_id, bucket_id, name)
);

-- Bytes and objects per tenant, kept by statement triggers so the quota
-- check is one row read; concurrent uploads serialise on this row.
CREATE TABLE IF NOT EXISTS storage_usage (
  tenant_id  uuid PRIMARY KEY DEFAULT app_tenant_id() REFERENCES tenants(id),
  bytes      bigint NOT NULL DEFAULT 0,
  objects    bigint NOT NULL DEFAULT 0
);

CREATE OR REPLACE FUNCTION storage_usage_track() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO storage_usage AS u (tenant_id, bytes, objects)
      SELECT tenant_id, sum(size), CASE WHEN TG_OP = 'INSERT' THEN count(*) ELSE 0 END
      FROM storage_new_rows GROUP BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE
      SET bytes = u.bytes + EXCLUDED.bytes, objects = u.objects + EXCLUDED.objects;
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    UPDATE storage_usage u
       SET bytes = u.bytes - d.bytes, objects = u.objects - d.objects
      FROM (SELECT tenant_id, sum(size) AS bytes,
                   CASE WHEN TG_OP = 'DELETE' THEN count(*) ELSE 0 END AS objects
              FROM storage_old_rows GROUP BY tenant_id) d
     WHERE u.tenant_id = d.tenant_id;
  END IF;
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS storage_usage_insert ON storage_objects;
CREATE TRIGGER storage_usage_insert AFTER INSERT ON storage_objects
  REFERENCING NEW TABLE AS storage_new_rows FOR EACH STATEMENT EXECUTE FUNCTION storage_usage_track();
DROP TRIGGER IF EXISTS storage_usage_update ON storage_objects;
CREATE TRIGGER storage_usage_update AFTER UPDATE ON storage_objects
  REFERENCING OLD TABLE AS storage_old_rows NEW TABLE AS storage_new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION storage_usage_track();
DROP TRIGGER IF EXISTS storage_usage_delete ON storage_objects;
CREATE TRIGGER storage_usage_delete AFTER DELETE ON storage_objects
  REFERENCING OLD TABLE AS storage_old_rows FOR EACH STATEMENT EXECUTE FUNCTION storage_usage_track();

CALL apply_tenant_isolation(ARRAY['storage_buckets', 'storage_objects', 'storage_usage']);

GRANT SELECT, INSERT, UPDATE, DELETE ON storage_buckets, storage_objects TO apprun_gateway;
GRANT SELECT, INSERT, UPDATE ON storage_usage TO apprun_gateway;
