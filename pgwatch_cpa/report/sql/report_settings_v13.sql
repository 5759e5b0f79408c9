-- The settings the report reviews, with their units (pg_monitor includes pg_read_all_settings).
SELECT s.name, s.setting, s.unit, s.vartype, s.source, s.pending_restart
FROM pg_catalog.pg_settings AS s
WHERE s.name = ANY(%(names)s::text[])
