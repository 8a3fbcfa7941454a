"""Deploy settings: one table of a TOML file (``[aws]``, ``[gcp]``), command-line flags over it,
validated by a pydantic model into a frozen config before any cloud call.

    values = settings_values(Path("deploy.toml"), "aws", {"mode": "serverless", "memory_mb": None})
    settings = validated(AwsSettings, values, "aws")   # ConfigError naming the key on a bad value

Flags left unset (None, or an empty tuple for repeatable flags) do not override the file. A key
the model does not know is an error that lists the known keys (a typo never silently falls back
to a default).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, TypeVar

from runners.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

M = TypeVar("M")  # a pydantic model (imported only when validating: the CLI starts fast)


def file_table(path: Path | None, table: str) -> dict[str, Any]:
    """The ``[table]`` of a TOML file (empty when no file is given, or it has no such table)."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; give --config an existing TOML file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML ({exc}); fix the line it names.") from None
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [{table}] must be a table, e.g. [{table}] then key = value lines.")
    return {key.replace("-", "_"): value for key, value in section.items()}


def settings_values(path: Path | None, table: str, flags: Mapping[str, Any]) -> dict[str, Any]:
    """The file's table, with every flag that was given laid over it."""
    values = file_table(path, table)
    values.update({key: value for key, value in flags.items() if value is not None and value != ()})
    return values


def validated(model: type[M], values: Mapping[str, Any], table: str) -> M:
    """``model(**values)``; a ValidationError becomes one ConfigError naming each bad key (as
    both the flag and the TOML key), what it got and what is allowed."""
    from pydantic import ValidationError

    try:
        return model(**values)  # type: ignore[operator]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if not error["loc"]:  # a rule across keys: its message names them
                problems.append(message)
                continue
            key = ".".join(str(part) for part in error["loc"])
            flag = "--" + key.split(".")[0].replace("_", "-")
            if error["type"] == "extra_forbidden":
                known = ", ".join(sorted(model.model_fields))  # type: ignore[attr-defined]
                message = f"unknown setting; the [{table}] keys are: {known}"
            elif "input" in error and error["type"] != "missing":
                message = f"{message} (got {error['input']!r})"
            problems.append(f"{flag} / [{table}] {key}: {message}")
        raise ConfigError("; ".join(problems), field=str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else None) from None
