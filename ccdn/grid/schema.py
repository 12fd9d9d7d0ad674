"""JSON-Schema validation of a grid config (workflow/schemas/config.schema.yaml) with one readable
line per problem: the key path, what is wrong, what is allowed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ccdn.grid.model import DATASETS, GridError

SCHEMA_RELATIVE = Path("workflow/schemas/config.schema.yaml")


def schema_path() -> Path:
    """The JSON Schema: in the checkout next to this package, else in the working directory."""
    candidates = [Path(__file__).resolve().parents[2] / SCHEMA_RELATIVE, Path.cwd() / SCHEMA_RELATIVE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise GridError(
        f"schema {SCHEMA_RELATIVE} not found (looked in {', '.join(str(c.parent) for c in candidates)}); "
        "run from a checkout of ccdn-repro or install it editable (pip install -e .)"
    )


def load_schema() -> dict[str, Any]:
    """The schema, with the dataset names filled in from the dataset table (written once)."""
    schema = yaml.safe_load(schema_path().read_text(encoding="utf-8"))
    schema.setdefault("$defs", {}).setdefault("dataset", {})["enum"] = list(DATASETS)
    return schema


def validate_config(config: Mapping[str, Any], *, source: str = "<config>") -> None:
    """JSON-Schema validation with one readable line per problem (key path, what is wrong, what is allowed)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [f"{source}: {_key_path(e.absolute_path)}: {_explain(e)}" for e in errors]
        raise GridError("invalid grid config:\n  " + "\n  ".join(lines))


def _key_path(path: Sequence[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _explain(error: Any) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"unknown key(s) {unknown}; allowed keys: {allowed}"
    if error.validator == "propertyNames":
        return f"{error.message} (allowed: {error.schema.get('propertyNames', {})})"
    if error.validator == "required":
        return f"{error.message} - add it (see workflow/schemas/config.schema.yaml)"
    return error.message
