"""The product's core: lifecycle, one poller per target kind, the PostgreSQL connection cache, the snapshot
store, /metrics exposition, the HTTP app and the in-process alerting service.

Imports flow one way: daemon -> collectors / alerts -> shared vocabulary (config, errors, secrets, logs).
The daemon reads what the application (``pgwatch_cpa.cpa``) publishes only through the wire-format module
``pgwatch_cpa.cpa.cache.stats``.
"""
