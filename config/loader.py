"""Load and validate stage YAML files, turning every problem into one clear ``ConfigError``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.model import StageConfig

CONFIG_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A stage file is invalid: the message names the file, the field, the bad value and the fix."""


def _field(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif item in ("none", "time-slicing", "mig") or item.startswith("function-after"):
            continue  # pydantic's names for union branches and validators, not fields of the file
        else:
            parts.append(item)
    return ".".join(parts) or "(top level)"


def _value_at(data: Any, loc: tuple[int | str, ...]) -> Any:
    for item in loc:
        if isinstance(data, list) and isinstance(item, int):
            if item >= len(data):
                break
            data = data[item]
        elif isinstance(data, dict) and item in data:
            data = data[item]
        else:
            break
    return data


def format_validation_error(path: Path, err: ValidationError, raw: dict[str, Any], *, what: str) -> str:
    """Return one line per problem: the field, pydantic's or our validator's message, and the bad value."""
    lines = [f"{path}: invalid {what} ({err.error_count()} problem(s))"]
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        value = e.get("input", _value_at(raw, loc))
        if isinstance(value, dict):
            # A cross-field rule: its message already names the values that disagree.
            lines.append(f"  {_field(loc)}: {msg}")
            continue
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        lines.append(f"  {_field(loc)}: {msg} (got {shown})")
    return "\n".join(lines)


def load_stage(path: Path) -> StageConfig:
    """Read one ``config/<stage>.yaml``; the file's stem must equal its ``stage`` field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a stage config is a mapping of fields, got {type(raw).__name__}")
    try:
        cfg = StageConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(path, err, raw, what="stage config")) from None
    if cfg.stage != path.stem:
        raise ConfigError(f"{path}: stage: {cfg.stage!r} must match the file name (use stage: {path.stem})")
    return cfg


def stage_files(config_dir: Path = CONFIG_DIR) -> list[Path]:
    return sorted(config_dir.glob("*.yaml"))


def load_stages(names: Iterable[str] | None = None, config_dir: Path = CONFIG_DIR) -> list[StageConfig]:
    """Validate every stage file (so a broken one fails even when not selected), return the selected ones."""
    configs = {p.stem: load_stage(p) for p in stage_files(config_dir)}
    if not configs:
        raise ConfigError(f"{config_dir}: no stage files (config/<stage>.yaml)")
    wanted = list(configs) if names is None else list(names)
    unknown = [n for n in wanted if n not in configs]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}: the stages are {', '.join(configs)}")
    order = {"dev": 0, "staging": 1, "prod": 2}
    return sorted((configs[n] for n in wanted), key=lambda c: (order[c.tier], c.stage))
