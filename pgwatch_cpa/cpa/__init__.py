"""The observed CPA practice-management application: its schema, query layer, loaders and synthetic data.

This package imports nothing from the pgwatch-cpa daemon; the daemon only watches the database it builds.
"""
