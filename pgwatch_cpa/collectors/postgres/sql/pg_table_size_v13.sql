-- Sizes of the user tables of the current database (heap + TOAST + FSM/VM, and their indexes): top-N by total
-- size plus a totals row. Size functions stat every file and wait for locks (lock_timeout bounds the wait),
-- so this runs on a slow interval.
WITH t AS (
    SELECT s.relid, s.schemaname, s.relname,
           pg_catalog.pg_table_size(s.relid) AS table_bytes, pg_catalog.pg_indexes_size(s.relid) AS index_bytes
    FROM pg_catalog.pg_stat_user_tables AS s
), ranked AS (
    SELECT t.*, row_number() OVER (ORDER BY coalesce(t.table_bytes, 0) + coalesce(t.index_bytes, 0) DESC, t.relid) AS rank
    FROM t
)
SELECT 'table' AS kind, r.schemaname, r.relname, 1::bigint AS tables, r.table_bytes, r.index_bytes
FROM ranked AS r WHERE r.rank <= %(top_n)s
UNION ALL
SELECT 'total', '', '', count(*), coalesce(sum(t.table_bytes), 0), coalesce(sum(t.index_bytes), 0) FROM t
