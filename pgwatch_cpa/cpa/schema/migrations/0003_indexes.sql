-- migrate: no-transaction
--
-- The guide's "Index Strategy", corrected per guide-errata.md, plus the indexes the query layer needs.
-- CREATE INDEX CONCURRENTLY cannot run in a transaction: the runner executes this file statement by statement in
-- autocommit. Every statement is IF NOT EXISTS, so a re-run after a failure resumes; an INVALID index left by a
-- failed concurrent build is dropped and rebuilt by the runner before it is recreated.

-- ---------------------------------------------------------------- organizations
-- UNIQUE: a subdomain identifies one organization (errata 7).
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_organizations_subdomain ON organizations (subdomain);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_organizations_subscription ON organizations (subscription_tier, created_at);

-- ---------------------------------------------------------------- users
-- UNIQUE: an email identifies one user inside an organization (errata 7).
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_users_org_email ON users (organization_id, email);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_org_role_active ON users (organization_id, role, is_active)
    WHERE deleted_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_last_login ON users (organization_id, last_login_at DESC)
    WHERE is_active = true;

-- ---------------------------------------------------------------- clients
-- Covering (errata 7): a client list by status reads no heap page.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_clients_org_status_name
    ON clients (organization_id, status, business_name) INCLUDE (id, risk_level, primary_contact_email)
    WHERE deleted_at IS NULL;
-- The dashboard lists every client of an organization by name; id breaks ties (stable order for paging).
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_clients_org_name
    ON clients (organization_id, business_name, id) INCLUDE (status, risk_level)
    WHERE deleted_at IS NULL;
-- Errata 6: the stored, coalesced tsvector column; queries match `contact_search @@ ...`.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_clients_contact_search ON clients USING gin (contact_search);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_clients_business_type_industry
    ON clients (organization_id, business_type, industry) WHERE deleted_at IS NULL;
-- Keyset pagination on (created_at, id).
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_clients_org_created
    ON clients (organization_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
-- Errata 5: a btree on the scalar text, not a GIN on the jsonb value.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_clients_quickbooks_mapping
    ON clients ((financial_data ->> 'quickbooks_id')) WHERE financial_data IS NOT NULL;

-- ---------------------------------------------------------------- engagements
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_engagements_client
    ON engagements (client_id) INCLUDE (status) WHERE deleted_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_engagements_reporting_period
    ON engagements (organization_id, year, quarter, type, status) WHERE deleted_at IS NULL;

-- ---------------------------------------------------------------- documents
-- Covering for the per-client document list (metadata without a heap visit).
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_client_category_year
    ON documents (client_id, category, year DESC, created_at DESC) INCLUDE (id, file_name, ocr_status)
    WHERE deleted_at IS NULL AND is_latest_version = true;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_ocr_processing
    ON documents (organization_id, ocr_status, created_at ASC) WHERE ocr_status IN ('pending', 'processing');
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_review_queue
    ON documents (organization_id, needs_review, created_at ASC) WHERE needs_review = true AND deleted_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_tags_search ON documents USING gin (tags)
    WHERE deleted_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_reporting_period
    ON documents (organization_id, year, quarter, category) WHERE deleted_at IS NULL;
-- Errata 3: ILIKE '%x%' on file names is served by a trigram GIN.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_file_name_trgm
    ON documents USING gin (file_name gin_trgm_ops) WHERE deleted_at IS NULL AND is_latest_version = true;
-- Keyset pagination (errata 2) and the search's ORDER BY created_at DESC.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_documents_org_created
    ON documents (organization_id, created_at DESC, id DESC) WHERE deleted_at IS NULL AND is_latest_version = true;

-- ---------------------------------------------------------------- tasks
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_tasks_assignee_status_priority
    ON tasks (assigned_to_id, status, priority, due_date ASC) WHERE deleted_at IS NULL;
-- Errata 4: the assignment queue ordered by the stored rank, open tasks only.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_tasks_assignee_priority_rank
    ON tasks (assigned_to_id, priority_rank, due_date, created_at)
    WHERE deleted_at IS NULL AND status NOT IN ('completed', 'cancelled');
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_tasks_engagement_workflow
    ON tasks (engagement_id, workflow_id, status) WHERE deleted_at IS NULL;
-- Errata: CURRENT_DATE is not IMMUTABLE; the query supplies `due_date < CURRENT_DATE`.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_tasks_overdue ON tasks (organization_id, due_date ASC)
    WHERE deleted_at IS NULL AND status NOT IN ('completed', 'cancelled');

-- ---------------------------------------------------------------- invoices
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_invoices_client_status_due
    ON invoices (client_id, status, due_date ASC) INCLUDE (balance_amount) WHERE deleted_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_invoices_payment_tracking
    ON invoices (organization_id, status, paid_amount, total_amount) WHERE deleted_at IS NULL;
-- Errata: date_trunc on a date resolves to the STABLE timestamptz version; cast to timestamp.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_invoices_revenue_reporting
    ON invoices (organization_id, date_trunc('month', invoice_date::timestamp), status)
    INCLUDE (total_amount, paid_amount)
    WHERE deleted_at IS NULL AND status IN ('paid', 'partial');
-- Open invoices (accounts receivable and aging), covering.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_invoices_open_ar
    ON invoices (organization_id, due_date) INCLUDE (client_id, status, balance_amount)
    WHERE deleted_at IS NULL AND status NOT IN ('paid', 'cancelled');
-- extract() on a date column is IMMUTABLE.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_revenue_monthly
    ON invoices (organization_id, extract(year FROM invoice_date), extract(month FROM invoice_date), status)
    WHERE deleted_at IS NULL;

-- ---------------------------------------------------------------- QuickBooks
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_quickbooks_sync_status
    ON quickbooks_syncs (organization_id, entity_type, status, started_at DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_quickbooks_webhooks_processing
    ON quickbooks_webhook_events (organization_id, status, next_retry_at ASC) WHERE status = 'pending';

-- ---------------------------------------------------------------- audit and compliance
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_audit_logs_entity_timeline
    ON audit_logs (organization_id, entity_type, entity_id, created_at DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_audit_logs_user_activity
    ON audit_logs (user_id, action, created_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_auth_attempts_security
    ON auth_attempts (email, ip_address, success, created_at DESC);
