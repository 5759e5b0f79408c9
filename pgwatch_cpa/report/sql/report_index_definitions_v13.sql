-- The definitions (CREATE INDEX ...) of the indexes the report names: to show what dropping one would lose and
-- how to build it again. NULL for an index dropped meanwhile.
SELECT i.oid::bigint AS index_oid, pg_catalog.pg_get_indexdef(i.oid) AS definition
FROM pg_catalog.unnest(%(oids)s::oid[]) AS i(oid)
