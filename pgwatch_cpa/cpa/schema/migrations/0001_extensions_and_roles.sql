-- Extensions and the application role.
--
-- cpa_app is the role the application connects as. It is created NOLOGIN: a deployment grants it LOGIN and a
-- password (or makes a login role a member of it) outside the migrations, so no secret lives in this file:
--     ALTER ROLE cpa_app LOGIN PASSWORD '...';      -- or: GRANT cpa_app TO app_login_user;
-- cpa_app never owns a table, so the row-level security policies of 0004 always apply to it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'cpa_app') THEN
        CREATE ROLE cpa_app NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN
    NULL;  -- another database of this cluster created it at the same moment (roles are cluster-wide)
END
$$;
