-- Every connectable database: its transaction-id age (wraparound is a cluster-wide risk, whichever database
-- it is in) and whether the poller's discovery would take it (not a template, CONNECT granted to us).
SELECT d.datname,
       pg_catalog.age(d.datfrozenxid) AS frozen_xid_age,
       (NOT d.datistemplate AND pg_catalog.has_database_privilege(d.oid, 'CONNECT')) AS discoverable
FROM pg_catalog.pg_database AS d
WHERE d.datallowconn
ORDER BY d.datname
