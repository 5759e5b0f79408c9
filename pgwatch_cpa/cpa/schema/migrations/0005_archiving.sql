-- migrate: no-transaction
--
-- Archiving and retention (the guide's "Data Archiving"; issue 14).
-- Safe on a live table: the new columns are nullable without a default (a catalog change, no rewrite), taken
-- under a 10 s lock_timeout so the ALTER never queues the workload behind a long transaction (a timeout fails
-- the migration with the statement named; re-run it); indexes are built CONCURRENTLY. The runner executes this
-- file statement by statement in autocommit, and every statement checks before it acts, so a re-run resumes.
--
-- archive_policies   the policies' numbers (the guide's are the defaults; UPDATE a row to change one). The
--                    archiver and the monitoring query (cpa_archive_backlog) both read them, so they agree.
-- archive_due        the one definition of "due for archiving", per policy: the archiver selects its batches
--                    from it, cpa_archive_backlog() aggregates it.
-- archive_batches    the archiver's journal: a batch is 'pending' from before its export is written until the
--                    transaction that applies it (delete / soft delete / mark) marks it 'applied'. A crash leaves
--                    'pending' rows that the next run completes or discards (pgwatch_cpa/cpa/archive/archiver.py).
-- archive_failures   per-organization failures of a run (the organization id stays in the database).

-- ---------------------------------------------------------------- archive markers
DO $$
BEGIN
    PERFORM set_config('lock_timeout', '10s', true);
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                    WHERE attrelid = 'public.documents'::regclass AND attname = 'archive_url' AND NOT attisdropped) THEN
        -- Where the document's archived reference lives (the URL of its batch's export).
        ALTER TABLE documents ADD COLUMN archived_at timestamptz, ADD COLUMN archive_url text;
    END IF;
END
$$;

DO $$
BEGIN
    PERFORM set_config('lock_timeout', '10s', true);
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                    WHERE attrelid = 'public.tasks'::regclass AND attname = 'archived_at' AND NOT attisdropped) THEN
        ALTER TABLE tasks ADD COLUMN archived_at timestamptz;  -- set with deleted_at: archived, not deleted by a user
    END IF;
END
$$;

DO $$
BEGIN
    PERFORM set_config('lock_timeout', '10s', true);
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                    WHERE attrelid = 'public.invoices'::regclass AND attname = 'archived_at' AND NOT attisdropped) THEN
        ALTER TABLE invoices ADD COLUMN archived_at timestamptz;
    END IF;
END
$$;

-- ---------------------------------------------------------------- policies, journal, failures
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = 'public' AND tablename = 'archive_policies') THEN
        CREATE TABLE archive_policies (
            policy        text PRIMARY KEY CHECK (policy IN ('documents', 'tasks', 'invoices', 'audit_logs')),
            archive_after interval NOT NULL CHECK (archive_after > interval '0'),
            retention     interval NOT NULL CHECK (retention > interval '0')
        );
        INSERT INTO archive_policies (policy, archive_after, retention) VALUES
            ('documents',  interval '1 year',  interval '7 years'),
            ('tasks',      interval '90 days', interval '3 years'),
            ('invoices',   interval '1 year',  interval '7 years'),
            ('audit_logs', interval '90 days', interval '7 years');
        ALTER TABLE archive_policies ENABLE ROW LEVEL SECURITY;  -- owner only: no grant, no policy
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS archive_batches (
    batch_id        text PRIMARY KEY,
    policy          text NOT NULL REFERENCES archive_policies (policy),
    organization_id text NOT NULL REFERENCES organizations (id),
    state           text NOT NULL CHECK (state IN ('pending', 'applied')),
    export_url      text,           -- NULL: the policy marks rows in place (invoices), nothing is exported
    manifest_url    text,
    row_count       integer NOT NULL DEFAULT 0,
    sha256          text,           -- of the uncompressed export
    bytes           bigint NOT NULL DEFAULT 0,  -- compressed export size
    created_at      timestamptz NOT NULL DEFAULT now(),
    applied_at      timestamptz,
    retain_until    timestamptz,
    purged_at       timestamptz,
    restored_at     timestamptz
);

CREATE TABLE IF NOT EXISTS archive_failures (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy          text NOT NULL,
    organization_id text NOT NULL,
    error           text NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class
                    WHERE oid IN ('public.archive_batches'::regclass, 'public.archive_failures'::regclass)
                      AND relrowsecurity) THEN
        ALTER TABLE archive_batches ENABLE ROW LEVEL SECURITY;
        ALTER TABLE archive_failures ENABLE ROW LEVEL SECURITY;
    END IF;
END
$$;

-- ---------------------------------------------------------------- archived invoices are read-only for the app
-- Restrictive: combined with tenant_isolation by AND. An UPDATE by cpa_app does not see an archived invoice (0
-- rows), and cannot archive one itself. cpa_app never had DELETE (0004). The owner (the archiver) bypasses RLS.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policies
                    WHERE schemaname = 'public' AND tablename = 'invoices' AND policyname = 'archived_read_only') THEN
        CREATE POLICY archived_read_only ON invoices AS RESTRICTIVE FOR UPDATE TO cpa_app
            USING (archived_at IS NULL) WITH CHECK (archived_at IS NULL);
    END IF;
END
$$;

-- ---------------------------------------------------------------- the definition of "due"
-- aged_from: the timestamp the policy's age counts from. Documents in an active engagement (planned, in progress,
-- in review) wait; a missing policy row makes nothing due.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_views WHERE schemaname = 'public' AND viewname = 'archive_due') THEN
        CREATE VIEW archive_due AS
        SELECT 'documents'::text AS policy, d.id, d.organization_id, d.created_at AS aged_from
          FROM documents d
         WHERE d.archived_at IS NULL
           AND d.created_at < now() - (SELECT p.archive_after FROM archive_policies p WHERE p.policy = 'documents')
           AND NOT EXISTS (SELECT 1 FROM engagements e
                            WHERE e.id = d.engagement_id AND e.deleted_at IS NULL
                              AND e.status IN ('planned', 'in_progress', 'review'))
        UNION ALL
        SELECT 'tasks'::text, t.id, t.organization_id, t.completed_at
          FROM tasks t
         WHERE t.status = 'completed' AND t.deleted_at IS NULL
           AND t.completed_at < now() - (SELECT p.archive_after FROM archive_policies p WHERE p.policy = 'tasks')
        UNION ALL
        SELECT 'invoices'::text, i.id, i.organization_id, i.paid_at
          FROM invoices i
         WHERE i.status = 'paid' AND i.archived_at IS NULL
           AND i.paid_at < now() - (SELECT p.archive_after FROM archive_policies p WHERE p.policy = 'invoices')
        UNION ALL
        SELECT 'audit_logs'::text, a.id, a.organization_id, a.created_at
          FROM audit_logs a
         WHERE a.created_at < now() - (SELECT p.archive_after FROM archive_policies p WHERE p.policy = 'audit_logs');
    END IF;
END
$$;

-- The backlog per policy for the monitoring role (pg_monitor reads no CPA table): aggregates only, no row, no
-- organization. Read by pgwatch_cpa/shipped/queries/cpa_archive.yaml.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc
                    WHERE proname = 'cpa_archive_backlog' AND pronamespace = 'public'::regnamespace) THEN
        CREATE FUNCTION cpa_archive_backlog()
            RETURNS TABLE (policy text, oldest_due_age_seconds double precision, rows_due bigint,
                           archive_after_seconds double precision)
            LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
        AS $fn$
            SELECT p.policy,
                   coalesce(extract(epoch FROM now() - min(d.aged_from))::double precision, 0),
                   count(d.id),
                   extract(epoch FROM p.archive_after)::double precision
              FROM archive_policies p
              LEFT JOIN archive_due d ON d.policy = p.policy
             GROUP BY p.policy, p.archive_after
             ORDER BY p.policy
        $fn$;
        REVOKE ALL ON FUNCTION cpa_archive_backlog() FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION cpa_archive_backlog() TO pg_monitor;
    END IF;
END
$$;

-- ---------------------------------------------------------------- current vs archived (partial indexes)
-- The archiver's scans: current rows only, in age order per organization; they shrink as archiving runs.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_archive_due
    ON documents (organization_id, created_at, id) WHERE archived_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_tasks_archive_due
    ON tasks (organization_id, completed_at, id) WHERE status = 'completed' AND deleted_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_invoices_archive_due
    ON invoices (organization_id, paid_at, id) WHERE status = 'paid' AND archived_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_audit_logs_org_created ON audit_logs (organization_id, created_at, id);
-- The archived side, for the lists of archived documents and invoices.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_archived
    ON documents (organization_id, archived_at DESC) WHERE archived_at IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_invoices_archived
    ON invoices (organization_id, invoice_date DESC) WHERE archived_at IS NOT NULL;
-- The journal's two scans: pending batches (recovery) and applied ones past retention (purge).
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_archive_batches_pending ON archive_batches (policy) WHERE state = 'pending';
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_archive_batches_retention
    ON archive_batches (retain_until) WHERE state = 'applied' AND purged_at IS NULL AND export_url IS NOT NULL;
