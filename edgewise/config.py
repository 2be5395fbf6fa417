"""Config loading: YAML or dict into a pydantic model, validated once, errors that name the field.

Every config model in edgewise derives from :class:`StrictModel` (unknown keys are refused) and
is loaded through :func:`load_config`, which turns pydantic's ValidationError into a
:class:`~edgewise.errors.ConfigError` such as::

    configs/tiny.yaml: field 'model.d_model': expected a valid integer, got 'abc'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from edgewise.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config models: unknown keys are an error, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable or empty file, bad syntax or a non-mapping top
    level is a ConfigError.

    An empty file (or one holding only comments) is refused rather than read as "all defaults":
    it is almost always a file that was not written or was truncated, and training or running on
    defaults nobody chose would hide that.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        raise ConfigError(
            f"{path}: empty config file; expected a mapping of settings (write '{{}}' to use every default)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of settings at the top level, got {type(data).__name__} {data!r:.60}"
        )
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: source, dotted field path, what was expected and what was given."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown field '{field}'")
            continue
        msg = err["msg"]
        if err["type"] == "missing":
            lines.append(f"{source}: field '{field}' is required")
            continue
        got = repr(err.get("input"))
        if len(got) > 90:  # a whole list or mapping: the field name says where, keep the line readable
            got = got[:90] + "..."
        lines.append(f"{source}: field '{field}': {msg[0].lower() + msg[1:]}, got {got}")
    return "\n".join(lines)


def load_config(model_cls: type[T], source: str | Path | dict[str, Any], *, name: str | None = None) -> T:
    """Validate ``source`` (a YAML path or a mapping) against ``model_cls``."""
    if isinstance(source, dict):
        data, label = source, name or "config"
    else:
        data, label = read_yaml(source), name or str(source)
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, label)) from None


def add_override_arguments(p, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable) and ``--seed N``, the same on every ``edgewise train`` command."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. {example} (repeatable)",
    )
    p.add_argument("--seed", type=int, help="shorthand for --set seed=N")
