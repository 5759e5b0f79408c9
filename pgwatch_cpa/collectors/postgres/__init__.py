"""PostgreSQL collectors: one file per view, SQL in ``sql/<view>_v<major>.sql`` chosen by version.

Privileges
----------
The daemon needs a dedicated login role with the predefined role ``pg_monitor`` and nothing else::

    CREATE ROLE pgwatch LOGIN PASSWORD '...' IN ROLE pg_monitor;   -- or: GRANT pg_monitor TO pgwatch;
    -- in each polled database (PUBLIC has CONNECT by default; only needed if it was revoked):
    GRANT CONNECT ON DATABASE cpa TO pgwatch;
    -- pg_stat_statements: once per cluster, as a superuser, in the database of the DSN:
    --   postgresql.conf: shared_preload_libraries = 'pg_stat_statements'   (restart)
    CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

``pg_monitor`` includes ``pg_read_all_stats`` (every session's row of pg_stat_activity, every statement of
pg_stat_statements, ``pg_database_size`` of every database) and ``pg_read_all_settings``. No table privilege
is needed: ``pg_table_size``/``pg_relation_size`` only need the relation to exist. Nothing the collectors run
writes, and nothing reads ``pg_stat_activity.query``.

Use a role of its own: the statements collector excludes its own statements by the role's userid
(pg_stat_statements has no application_name), so an application sharing that role would vanish from it.

Protection of the monitored server: every connection sets ``application_name=pgwatch-cpa``,
``statement_timeout`` (default 5 s) and ``lock_timeout`` (default 100 ms) server-side; a target holds at most
``max_connections`` (default 2) connections across all its databases, reused across cycles; slow collectors
(sizes) run every 5 minutes; pg_stat_statements is read with ``pg_stat_statements(false)`` (no text file I/O).
"""

from pgwatch_cpa.collectors.postgres.pg_database_size import DatabaseSizeCollector
from pgwatch_cpa.collectors.postgres.pg_locks import LocksCollector
from pgwatch_cpa.collectors.postgres.pg_settings import SettingsCollector
from pgwatch_cpa.collectors.postgres.pg_stat_activity import ActivityCollector
from pgwatch_cpa.collectors.postgres.pg_stat_bgwriter import BgwriterCollector
from pgwatch_cpa.collectors.postgres.pg_stat_database import DatabaseCollector
from pgwatch_cpa.collectors.postgres.pg_stat_replication import ReplicationCollector
from pgwatch_cpa.collectors.postgres.pg_stat_statements import StatementsCollector
from pgwatch_cpa.collectors.postgres.pg_stat_user_indexes import IndexesCollector
from pgwatch_cpa.collectors.postgres.pg_stat_user_tables import TablesCollector
from pgwatch_cpa.collectors.postgres.pg_stat_wal import WalCollector
from pgwatch_cpa.collectors.postgres.pg_table_size import TableSizeCollector

__all__ = [
    "ActivityCollector", "BgwriterCollector", "DatabaseCollector", "DatabaseSizeCollector", "IndexesCollector",
    "LocksCollector", "ReplicationCollector", "SettingsCollector", "StatementsCollector", "TableSizeCollector",
    "TablesCollector", "WalCollector",
]
