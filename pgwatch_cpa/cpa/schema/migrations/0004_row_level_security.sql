-- Row-level security and grants for the application role.
--
-- A session sees one organization: the application runs every request in a transaction that starts with
--     SELECT set_config('app.organization_id', $1, true);
-- current_setting(..., true) is NULL (or '') when the setting is absent, so a session that forgot it sees nothing.
-- cpa_app does not own these tables (the migrating role does), so the policies apply to it without FORCE.
-- The owner and superusers bypass RLS: migrations, archival and the QuickBooks worker run as the owner.

ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organizations
    USING (id = current_setting('app.organization_id', true))
    WITH CHECK (id = current_setting('app.organization_id', true));

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'clients', 'engagements', 'documents', 'tasks', 'invoices', 'audit_logs',
                             'quickbooks_syncs', 'quickbooks_webhook_events']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
                          USING (organization_id = current_setting('app.organization_id', true))
                          WITH CHECK (organization_id = current_setting('app.organization_id', true))$p$, t);
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA public TO cpa_app;
-- Soft delete: the application updates deleted_at; it never deletes rows.
GRANT SELECT, UPDATE ON organizations TO cpa_app;
GRANT SELECT, INSERT, UPDATE ON users, clients, engagements, documents, tasks, invoices,
    quickbooks_syncs, quickbooks_webhook_events TO cpa_app;
-- Audit trail is append-only for the application.
GRANT SELECT, INSERT ON audit_logs TO cpa_app;
-- Pre-tenant table (no RLS): the login path records attempts and counts recent failures.
GRANT SELECT, INSERT ON auth_attempts TO cpa_app;
