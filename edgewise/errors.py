"""User-facing errors.

Anything a user can cause (a bad file, a wrong config field, a missing manifest row) raises a
subclass of :class:`EdgewiseError`. The CLI prints its message without a traceback and exits
with :data:`EXIT_USER_ERROR`; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected internal error (a bug): traceback shown
EXIT_USER_ERROR = 2  # bad input, config or environment: message only
EXIT_INTERRUPTED = 130


class EdgewiseError(Exception):
    """An error the user can fix; its message names the file or field and what was expected."""


class ConfigError(EdgewiseError):
    """A config file or value is invalid (unknown key, wrong type, out of range)."""


class AudioError(EdgewiseError):
    """An audio file cannot be used (corrupt, truncated, empty, silent, unsupported)."""


class DataError(EdgewiseError):
    """A corpus or manifest is invalid (missing file, unknown label, empty split)."""


class MissingDependencyError(EdgewiseError):
    """An optional dependency or system tool is not installed; the message says how to get it."""
