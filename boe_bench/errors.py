"""Errors a user can fix by changing their command; the CLI prints them as one sentence."""


class ConfigError(ValueError):
    """A bad config value, an impossible schedule, a missing file or an unreachable model."""
