"""Archiving and retention of the CPA data, as the guide's "Data Archiving" section specifies (issue 14).

    report = await archive(dsn, "file:///var/lib/cpa-archive", policies=["audit_logs"])   # archiver.py
    purged = await purge_expired(dsn, dry_run=True)                                       # retention.py
    rows = await restore(dsn, "file:///var/lib/cpa-archive/audit_logs/.../<batch>.manifest.json")  # restore.py

Modules: policies (what each policy does), destination (fsspec URLs, durable writes), export (the gzip JSON-lines
export and its manifest), archiver (the batch loop and its crash recovery), retention, restore, publish (progress
to Redis in the format of stats.py) and schedule (cron). The daemon reads only stats.py, so this file imports
nothing: importing the wire format must not load fsspec or psycopg.
"""
