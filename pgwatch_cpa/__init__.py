"""pgwatch-cpa: PostgreSQL and Redis monitoring for a CPA practice-management platform."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pgwatch-cpa")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
