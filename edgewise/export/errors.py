"""Errors of the export step: a format that cannot be produced, or an artifact that fails its gate."""

from __future__ import annotations

from edgewise.errors import EdgewiseError


class ExportError(EdgewiseError):
    """An artifact could not be produced or run; the message names the format and the reason."""


class ParityError(ExportError):
    """An artifact differs from the PyTorch model by more than its format's tolerance."""
