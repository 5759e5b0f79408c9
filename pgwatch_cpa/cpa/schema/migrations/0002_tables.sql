-- Tables of the CPA platform. Multi-tenant by organization_id, soft delete by deleted_at.
-- Ids are text (the platform compares them with literals such as 'org_123'); money is numeric(14,2), never float.
-- Status columns are NOT NULL with a CHECK so `status NOT IN (...)` never silently drops a NULL row.

CREATE TABLE organizations (
    id                text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    name              text NOT NULL,
    subdomain         text NOT NULL,
    subscription_tier text NOT NULL DEFAULT 'starter'
                      CHECK (subscription_tier IN ('starter', 'professional', 'enterprise')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);

CREATE TABLE users (
    id              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    organization_id text NOT NULL REFERENCES organizations (id),
    email           text NOT NULL,
    name            text NOT NULL,
    role            text NOT NULL DEFAULT 'staff' CHECK (role IN ('owner', 'admin', 'manager', 'staff', 'client')),
    is_active       boolean NOT NULL DEFAULT true,
    last_login_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);

CREATE TABLE clients (
    id                    text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    organization_id       text NOT NULL REFERENCES organizations (id),
    business_name         text NOT NULL,
    business_type         text,
    industry              text,
    status                text NOT NULL DEFAULT 'active'
                          CHECK (status IN ('prospect', 'active', 'inactive', 'archived')),
    risk_level            text NOT NULL DEFAULT 'low' CHECK (risk_level IN ('low', 'medium', 'high')),
    primary_contact_name  text,
    primary_contact_email text,
    primary_contact_phone text,
    financial_data        jsonb,
    -- Errata 6: a NULL contact field must not blank the whole document; queries use this very column.
    contact_search        tsvector GENERATED ALWAYS AS (
                              to_tsvector('english'::regconfig,
                                          coalesce(business_name, '') || ' ' ||
                                          coalesce(primary_contact_name, '') || ' ' ||
                                          coalesce(primary_contact_email, ''))) STORED,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz
);

CREATE TABLE engagements (
    id              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    organization_id text NOT NULL REFERENCES organizations (id),
    client_id       text NOT NULL REFERENCES clients (id),
    name            text NOT NULL,
    type            text NOT NULL CHECK (type IN ('tax_return', 'bookkeeping', 'audit', 'advisory', 'payroll')),
    status          text NOT NULL DEFAULT 'planned'
                    CHECK (status IN ('planned', 'in_progress', 'review', 'completed', 'cancelled')),
    year            smallint NOT NULL,
    quarter         smallint CHECK (quarter BETWEEN 1 AND 4),
    start_date      date,
    due_date        date,
    fee             numeric(14, 2) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);

CREATE TABLE documents (
    id                 text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    organization_id    text NOT NULL REFERENCES organizations (id),
    client_id          text NOT NULL REFERENCES clients (id),
    engagement_id      text REFERENCES engagements (id),
    uploaded_by        text NOT NULL REFERENCES users (id),
    parent_document_id text REFERENCES documents (id),
    file_name          text NOT NULL,
    file_size          bigint NOT NULL DEFAULT 0,
    mime_type          text NOT NULL DEFAULT 'application/pdf',
    category           text NOT NULL,
    year               smallint NOT NULL,
    quarter            smallint CHECK (quarter BETWEEN 1 AND 4),
    version            integer NOT NULL DEFAULT 1,
    is_latest_version  boolean NOT NULL DEFAULT true,
    ocr_status         text NOT NULL DEFAULT 'pending'
                       CHECK (ocr_status IN ('pending', 'processing', 'completed', 'failed', 'skipped')),
    needs_review       boolean NOT NULL DEFAULT false,
    tags               text[] NOT NULL DEFAULT '{}',
    extracted_data     jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz
);

-- No client_id: a task reaches its client through its engagement.
CREATE TABLE tasks (
    id              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    organization_id text NOT NULL REFERENCES organizations (id),
    engagement_id   text REFERENCES engagements (id),
    workflow_id     text,
    assigned_to_id  text REFERENCES users (id),
    title           text NOT NULL,
    status          text NOT NULL DEFAULT 'todo'
                    CHECK (status IN ('todo', 'in_progress', 'blocked', 'review', 'completed', 'cancelled')),
    priority        text NOT NULL DEFAULT 'normal' CHECK (priority IN ('urgent', 'high', 'normal', 'low')),
    -- Errata 4: ORDER BY CASE priority ... cannot use an index; this stored rank can.
    priority_rank   smallint GENERATED ALWAYS AS (
                        CASE priority WHEN 'urgent' THEN 1 WHEN 'high' THEN 2 WHEN 'normal' THEN 3 ELSE 4 END
                    ) STORED,
    due_date        date,
    checklist       jsonb NOT NULL DEFAULT '[]',
    completed_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);

CREATE TABLE invoices (
    id              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    organization_id text NOT NULL REFERENCES organizations (id),
    client_id       text NOT NULL REFERENCES clients (id),
    engagement_id   text REFERENCES engagements (id),
    invoice_number  text NOT NULL,
    status          text NOT NULL DEFAULT 'draft'
                    CHECK (status IN ('draft', 'sent', 'partial', 'overdue', 'paid', 'cancelled')),
    invoice_date    date NOT NULL,
    due_date        date NOT NULL,
    total_amount    numeric(14, 2) NOT NULL CHECK (total_amount >= 0),
    paid_amount     numeric(14, 2) NOT NULL DEFAULT 0 CHECK (paid_amount >= 0),
    balance_amount  numeric(14, 2) GENERATED ALWAYS AS (total_amount - paid_amount) STORED,
    paid_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);

CREATE TABLE audit_logs (
    id              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    organization_id text NOT NULL REFERENCES organizations (id),
    user_id         text REFERENCES users (id),
    entity_type     text NOT NULL,
    entity_id       text NOT NULL,
    action          text NOT NULL,
    changes         jsonb,
    ip_address      inet,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Login attempts happen before a tenant is known: no organization_id, no RLS (see 0004).
CREATE TABLE auth_attempts (
    id             text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    email          text NOT NULL,
    ip_address     inet NOT NULL,
    success        boolean NOT NULL,
    failure_reason text,
    user_agent     text,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE quickbooks_syncs (
    id              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    organization_id text NOT NULL REFERENCES organizations (id),
    entity_type     text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    records_synced  integer NOT NULL DEFAULT 0,
    error           text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);

CREATE TABLE quickbooks_webhook_events (
    id              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    organization_id text NOT NULL REFERENCES organizations (id),
    event_type      text NOT NULL,
    entity_type     text NOT NULL,
    entity_id       text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_retry_at   timestamptz,
    processed_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
