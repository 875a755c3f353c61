"""Errors the user must fix. main.py prints them as one paragraph and exits with code 2."""

import re


class UserError(Exception):
    """A problem with the user's config, data or environment; the message says what to do."""


class ConfigError(UserError, ValueError):
    """An invalid config value; the message names the field."""


class DataError(UserError):
    """Missing, empty or unreadable data; the message names the path and the flag to set."""


# Orbax writes through TensorStore, whose I/O failures (a full disk, a quota, a file size limit, a
# read-only or vanished directory) arrive as ValueError or RuntimeError with an absl status code
# and, for system calls, the errno: 'RESOURCE_EXHAUSTED: Error writing ...: No space left on
# device [os_error_code='28']'. Plain file I/O raises OSError.
_STORAGE_STATUS = re.compile(
    r"\b(RESOURCE_EXHAUSTED|PERMISSION_DENIED|UNAVAILABLE|DATA_LOSS|OUT_OF_RANGE): "
    r"|os_error_code='?\d+"
)


def is_storage_error(error: BaseException) -> bool:
    """Whether `error` is a failed read or write of files (not a programming error)."""
    if isinstance(error, OSError):
        return True
    return isinstance(error, ValueError | RuntimeError) and bool(_STORAGE_STATUS.search(str(error)))
