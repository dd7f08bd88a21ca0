"""Load and validate a scan configuration against ``config_schema.yaml``, filling in defaults.

Every error names the offending key (as a dotted path) and the file it came from.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from minescan.errors import ConfigError
from minescan.periods import expand_periods


@cache
def schema() -> dict:
    return yaml.safe_load(resources.files("minescan").joinpath("config_schema.yaml").read_text())


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        target = root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return target
    return node


def _fill_defaults(value, node: dict, root: dict):
    """Recursively insert schema defaults for missing object properties (including nested objects)."""
    node = _resolve(node, root)
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            sub_r = _resolve(sub, root)
            if key not in value and "default" in sub_r:
                value[key] = copy.deepcopy(sub_r["default"])
            if key in value:
                value[key] = _fill_defaults(value[key], sub_r, root)
    return value


def _from_text(value, node: dict, root: dict):
    """Snakemake's ``--config key={...}`` reads nested values as text (YAML's BaseLoader: ``{"n": 4}`` gives
    ``"4"``): a text value where the schema allows no text becomes the number, boolean or null it spells,
    if it spells one; anything else is left for the validator to name."""
    node = _resolve(node, root)
    if isinstance(value, dict):
        props = node.get("properties", {})
        return {k: _from_text(v, props[k], root) if k in props else v for k, v in value.items()}
    if not isinstance(value, str):
        return value
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if "string" in types or value in node.get("enum", ()):
        return value
    text = value.strip()
    if "integer" in types and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if "number" in types:
        try:
            return float(text) if re.search(r"[.eE]|inf|nan", text, re.I) else int(text)
        except ValueError:
            pass
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "null" in types and text.lower() in ("null", "none", "~"):
        return None
    return value


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate(config: dict, source: str = "config", today: dt.date | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled in and ``periods`` expanded (``periods`` +
    ``schedule``, oldest first, as of ``today``); raise ConfigError naming the key."""
    root = schema()
    cfg = _fill_defaults(_from_text(copy.deepcopy(config or {}), root, root), root, root)
    validator = jsonschema.Draft202012Validator(root)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), _path(e)))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            where = _path(err)
            keys = ", ".join(f"'{k}'" if where == "(top level)" else f"'{where}.{k}'" for k in extra)
            raise ConfigError(f"{source}: unknown key {keys}")
        raise ConfigError(f"{source}: key '{_path(err)}': {err.message}")
    if cfg["grid"]["tile_px"] % 2:
        raise ConfigError(f"{source}: key 'grid.tile_px' must be even (a tile splits into four quadrants)")
    try:
        cfg["periods"] = expand_periods(cfg, today)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def load(path: str | Path, overrides: dict | None = None, today: dt.date | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate(raw, str(path), today)


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def reference_markdown() -> str:
    """Every config key as a Markdown table (key, type, default, description), generated from the schema.

    README.md embeds this table between markers; tests/test_config.py checks it is current.
    """
    root = schema()
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]

    def fmt_type(node):
        if "enum" in node:
            return " / ".join(str(v) for v in node["enum"])
        t = node.get("type", "")
        return " or ".join(t) if isinstance(t, list) else str(t)

    def walk(node, prefix):
        node = _resolve(node, root)
        for key, sub in node.get("properties", {}).items():
            sub_r = _resolve(sub, root)
            path = f"{prefix}{key}"
            if "default" in sub_r:
                default = sub_r["default"]
                default_txt = "" if default == {} else f"`{json_dump(default)}`"
            else:
                default_txt = "required" if key in node.get("required", []) else ""
            desc = " ".join(str(sub_r.get("description", "")).split()).replace("|", "\\|")
            rows.append(f"| `{path}` | {fmt_type(sub_r)} | {default_txt} | {desc} |")
            walk(sub_r, path + ".")

    walk(root, "")
    return "\n".join(rows) + "\n"


def json_dump(value) -> str:
    import json

    return json.dumps(value)
