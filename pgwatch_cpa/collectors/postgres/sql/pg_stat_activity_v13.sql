-- Client backends grouped by the dimensions we export, with the ages and counts the alerts need.
-- The `query` column is never selected: it holds literal client data.
SELECT coalesce(a.datname, '')                                          AS datname,
       coalesce(a.state, 'unknown')                                     AS state,
       coalesce(a.wait_event_type, 'none')                              AS wait_event_type,
       coalesce(a.application_name, '')                                 AS application_name,
       count(*)                                                         AS connections,
       max(extract(epoch FROM now() - a.xact_start))                    AS oldest_xact_age,
       max(extract(epoch FROM now() - a.query_start)) FILTER (WHERE a.state = 'active') AS oldest_query_age,
       max(extract(epoch FROM now() - a.state_change))                  AS oldest_state_age,
       count(*) FILTER (WHERE a.state <> 'idle'
                          AND now() - a.query_start > %(long_query_seconds)s * interval '1 second')
                                                                        AS long_running,
       count(*) FILTER (WHERE CASE WHEN a.wait_event_type = 'Lock'
                                   THEN cardinality(pg_catalog.pg_blocking_pids(a.pid)) > 0
                                   ELSE false END)                      AS blocked
FROM pg_catalog.pg_stat_activity AS a
WHERE a.backend_type = 'client backend'
  AND a.pid <> pg_catalog.pg_backend_pid()
GROUP BY 1, 2, 3, 4
