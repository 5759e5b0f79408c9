SELECT s.name, s.setting, s.unit, s.vartype
FROM pg_catalog.pg_settings AS s
WHERE s.name = ANY(%(names)s::text[])
