"""Settings: strict, frozen pydantic models loaded from YAML and overridden by ``PGWATCH_*`` variables.

``base`` holds the vocabulary every section shares (the strict base model, ``Duration``, secrets read from the
injected environment); ``settings`` the targets and the loader; ``alerting`` the ``alerting:`` section.
"""

from pgwatch_cpa.config.settings import (
    DEFAULT_KEY_FAMILIES,
    PostgresTarget,
    RedisTarget,
    Settings,
    load_settings,
    settings_from_mapping,
)

__all__ = [
    "DEFAULT_KEY_FAMILIES", "PostgresTarget", "RedisTarget", "Settings", "load_settings", "settings_from_mapping",
]
