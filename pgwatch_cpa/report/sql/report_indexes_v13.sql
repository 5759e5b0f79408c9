-- Every index of a user table or materialised view of the current database, with what the index rules need.
-- Catalog and statistics only, so no lock: sizes are pg_class.relpages x block_size (as of the last VACUUM,
-- ANALYZE or CREATE INDEX), not pg_relation_size, which locks the relation. Indexes of partitions attached to a
-- partitioned index are left out: they cannot be dropped or rebuilt one by one. "columns" holds each column
-- (a quoted name, or an expression), key columns first, then INCLUDE columns; with the operator classes,
-- collations and options it tells duplicates and prefixes apart. pg_get_indexdef is called only for indexes
-- with expressions (costly on a cold connection: ~0.1 ms per index); full definitions are read afterwards for
-- the reported indexes only (report_index_definitions). An index backs a constraint if pg_constraint names
-- it (primary key, unique, exclusion, or the unique index a foreign key references).
WITH constraint_index AS (
    SELECT DISTINCT c.conindid FROM pg_catalog.pg_constraint AS c WHERE c.conindid <> 0
), building AS (
    SELECT DISTINCT p.index_relid FROM pg_catalog.pg_stat_progress_create_index AS p
)
SELECT x.indexrelid::bigint AS index_oid, x.indrelid::bigint AS table_oid,
       n.nspname AS schema, t.relname AS table, i.relname AS index, am.amname AS method,
       pg_catalog.pg_stat_get_numscans(x.indexrelid) AS idx_scan,
       greatest(i.relpages, 0)::float8 * pg_catalog.current_setting('block_size')::float8 AS size_bytes,
       greatest(t.relpages, 0)::float8 * pg_catalog.current_setting('block_size')::float8 AS table_bytes,
       greatest(t.reltuples::float8, pg_catalog.pg_stat_get_live_tuples(t.oid)::float8) AS table_rows,
       (pg_catalog.pg_stat_get_tuples_inserted(t.oid) + pg_catalog.pg_stat_get_tuples_updated(t.oid)
        + pg_catalog.pg_stat_get_tuples_deleted(t.oid))::float8 AS table_writes,
       x.indisunique AS is_unique, x.indisprimary AS is_primary, x.indisexclusion AS is_exclusion,
       x.indisvalid AS is_valid, x.indisreplident AS is_replica_identity,
       (ci.conindid IS NOT NULL) AS backs_constraint, (b.index_relid IS NOT NULL) AS building,
       x.indnkeyatts AS key_columns,
       CASE WHEN x.indexprs IS NULL
            THEN ARRAY(SELECT pg_catalog.quote_ident(a.attname)
                       FROM pg_catalog.unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                       JOIN pg_catalog.pg_attribute AS a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                       ORDER BY k.n)
            ELSE ARRAY(SELECT pg_catalog.pg_get_indexdef(x.indexrelid, k, true)
                       FROM pg_catalog.generate_series(1, x.indnatts::int) AS k ORDER BY k)
       END AS columns,
       x.indclass::text AS opclasses, x.indcollation::text AS collations, x.indoption::text AS options,
       pg_catalog.pg_get_expr(x.indpred, x.indrelid, true) AS predicate
FROM pg_catalog.pg_index AS x
JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_class AS t ON t.oid = x.indrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace
JOIN pg_catalog.pg_am AS am ON am.oid = i.relam
LEFT JOIN constraint_index AS ci ON ci.conindid = x.indexrelid
LEFT JOIN building AS b ON b.index_relid = x.indexrelid
WHERE t.relkind IN ('r', 'm') AND t.relpersistence <> 't' AND i.relkind = 'i' AND NOT i.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
ORDER BY x.indexrelid
