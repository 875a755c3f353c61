"""Errors the user must fix. main.py prints them as one paragraph and exits with code 2."""


class UserError(Exception):
    """A problem with the user's config, data or environment; the message says what to do."""


class ConfigError(UserError, ValueError):
    """An invalid config value; the message names the field."""


class DataError(UserError):
    """Missing, empty or unreadable data; the message names the path and the flag to set."""
