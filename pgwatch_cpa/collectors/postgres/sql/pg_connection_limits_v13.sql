SELECT pg_catalog.current_setting('max_connections')::int                            AS max_connections,
       pg_catalog.current_setting('superuser_reserved_connections')::int             AS superuser_reserved_connections,
       0                                                                            AS reserved_connections
