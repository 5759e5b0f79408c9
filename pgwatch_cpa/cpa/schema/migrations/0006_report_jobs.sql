-- Report generation jobs, and the monitoring views of the business targets (OCR < 30 s, report generation
-- < 60 s, QuickBooks sync < 5 minutes) that pgwatch-cpa's shipped cpa_business.yaml reads.
--
-- report_jobs is a tenant table like the others (0004): row-level security by app.organization_id.
-- The monitoring_* views return counts and ages only, never an organization id. They run with their owner's
-- rights (the migrating role, which owns the tables and so bypasses row-level security), so the monitoring role
-- (pg_monitor and nothing else) reads the aggregates through them without any right on the tables.

CREATE TABLE report_jobs (
    id              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    organization_id text NOT NULL REFERENCES organizations (id),
    report_type     text NOT NULL,
    status          text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    completed_at    timestamptz
);
CREATE INDEX idx_report_jobs_unfinished ON report_jobs (status, requested_at)
    WHERE status IN ('queued', 'running');
CREATE INDEX idx_report_jobs_org ON report_jobs (organization_id, requested_at DESC);

ALTER TABLE report_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON report_jobs
    USING (organization_id = current_setting('app.organization_id', true))
    WITH CHECK (organization_id = current_setting('app.organization_id', true));
GRANT SELECT, INSERT, UPDATE ON report_jobs TO cpa_app;

-- Documents waiting for OCR, by state: how many, and how long ago the oldest was uploaded (0 when none).
CREATE VIEW monitoring_ocr_backlog AS
SELECT s.ocr_status,
       count(d.id) AS documents,
       coalesce(extract(epoch FROM now() - min(d.created_at)), 0)::float8 AS oldest_age_seconds
FROM (VALUES ('pending'), ('processing')) AS s (ocr_status)
LEFT JOIN documents d ON d.ocr_status = s.ocr_status AND d.deleted_at IS NULL
GROUP BY s.ocr_status;

-- Report jobs not finished yet, by report type and state: how many, and the oldest one's age since it was requested.
CREATE VIEW monitoring_report_backlog AS
SELECT report_type, status,
       count(*) AS jobs,
       extract(epoch FROM now() - min(requested_at))::float8 AS oldest_age_seconds
FROM report_jobs
WHERE status IN ('queued', 'running')
GROUP BY report_type, status;

-- QuickBooks syncs by entity type, over organizations: the largest age of an organization's last completed sync,
-- how many organizations' last completed sync is older than 5 minutes, and the running syncs and the oldest one's age.
CREATE VIEW monitoring_quickbooks_sync AS
WITH last_completed AS (
    SELECT entity_type, organization_id, max(completed_at) AS completed_at
    FROM quickbooks_syncs
    WHERE status = 'completed'
    GROUP BY entity_type, organization_id
), running AS (
    SELECT entity_type, count(*) AS syncs, extract(epoch FROM now() - min(started_at))::float8 AS oldest_age_seconds
    FROM quickbooks_syncs
    WHERE status = 'running'
    GROUP BY entity_type
), completed AS (
    SELECT entity_type,
           extract(epoch FROM now() - min(completed_at))::float8 AS max_age_seconds,
           count(*) FILTER (WHERE completed_at < now() - interval '5 minutes') AS stale_organizations
    FROM last_completed
    GROUP BY entity_type
)
SELECT coalesce(c.entity_type, r.entity_type) AS entity_type,
       coalesce(c.max_age_seconds, 0) AS last_completed_max_age_seconds,
       coalesce(c.stale_organizations, 0) AS stale_organizations,
       coalesce(r.syncs, 0) AS running_syncs,
       coalesce(r.oldest_age_seconds, 0) AS running_oldest_age_seconds
FROM completed c
FULL JOIN running r ON r.entity_type = c.entity_type;

GRANT SELECT ON monitoring_ocr_backlog, monitoring_report_backlog, monitoring_quickbooks_sync TO pg_monitor;
