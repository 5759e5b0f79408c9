-- Client connections (the report's own included: it holds a slot too) and the limits, as the activity
-- collector computes utilisation: connections / (max_connections - the reserved slots).
SELECT (SELECT count(*) FROM pg_catalog.pg_stat_activity AS a WHERE a.backend_type = 'client backend')
                                                                        AS connections,
       pg_catalog.current_setting('max_connections')::int                AS max_connections,
       pg_catalog.current_setting('superuser_reserved_connections')::int AS superuser_reserved_connections,
       0                                                                  AS reserved_connections
