"""The CPA schema: numbered SQL migrations and their runner."""

from pgwatch_cpa.cpa.schema.migrate import MIGRATIONS_DIR, MigrationError, load_migrations, migrate, migrate_sync

__all__ = ["MIGRATIONS_DIR", "MigrationError", "load_migrations", "migrate", "migrate_sync"]
