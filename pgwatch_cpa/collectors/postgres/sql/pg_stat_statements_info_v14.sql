-- requires: pg_stat_statements >= 1.9
SELECT i.dealloc FROM {schema}.pg_stat_statements_info AS i
