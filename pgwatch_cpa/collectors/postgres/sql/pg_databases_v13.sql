-- Databases a target may poll (discovery): connectable, not templates, and CONNECT granted to us.
SELECT d.datname
FROM pg_catalog.pg_database AS d
WHERE d.datallowconn AND NOT d.datistemplate
  AND pg_catalog.has_database_privilege(d.oid, 'CONNECT')
ORDER BY d.datname
