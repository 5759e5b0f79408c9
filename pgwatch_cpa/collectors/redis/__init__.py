"""Redis collectors: INFO, SLOWLOG, LATENCY and incremental key-family statistics."""
