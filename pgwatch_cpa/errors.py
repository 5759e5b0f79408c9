"""The one exception root of pgwatch-cpa; every error we raise on purpose derives from it."""


class PgwatchError(Exception):
    """Root of every error pgwatch-cpa raises deliberately."""


class ConfigError(PgwatchError):
    """Invalid configuration. Carries every problem found, each prefixed with its key path."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


class SandboxError(PgwatchError):
    """A throwaway server could not be found, started or stopped."""


class CollectorError(PgwatchError):
    """A collector failed in a way that is expected to repeat (e.g. missing privilege or extension)."""
