"""The key reference in docs/studies.md, generated from the study schema (``ablate.schema.StudySpec``).

``python -m ablate.study_doc`` rewrites that section of the page in place; a test fails when the page and
the schema disagree, so a key added to the schema is a key documented.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel
from tabulate import tabulate

from ablate.schema import StudySpec

PAGE = Path(__file__).resolve().parents[1] / "docs" / "studies.md"
BEGIN = "<!-- study keys: generated from ablate/schema.py by `python -m ablate.study_doc`; do not edit by hand -->"
END = "<!-- end of study keys -->"


def keys_table() -> str:
    """Every study key: its type, default, allowed values and meaning, sections after their keys."""
    rows = list(_rows(StudySpec, ""))
    return tabulate(rows, headers=["key", "type", "default", "allowed", "what it does"], tablefmt="github")


def _rows(model: type[BaseModel], prefix: str) -> Iterator[list[str]]:
    properties = model.model_json_schema()["properties"]
    for name, field in model.model_fields.items():
        key, schema = f"{prefix}{name}", _not_null(properties[name])
        inner = _model_in(field.annotation)
        if field.is_required():
            default = "required"
        elif inner is not None and typing.get_origin(field.annotation) is not dict:
            default = _show(None) if field.get_default() is None else "(section below)"
        else:
            default = _show(field.get_default(call_default_factory=True))
        yield [f"`{key}`", _type(schema, nullable="anyOf" in properties[name]), default, _allowed(schema),
               (field.description or "").replace("|", "\\|")]  # a bare | would end the table cell
        if inner is not None:
            yield from _rows(inner, f"{key}.<name>." if typing.get_origin(field.annotation) is dict else f"{key}.")


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model a field holds: itself, in an optional, or as a mapping's values."""
    return next((a for a in (annotation, *typing.get_args(annotation))
                 if isinstance(a, type) and issubclass(a, BaseModel)), None)


def _not_null(schema: dict) -> dict:
    members = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    return members[0] if len(members) == 1 else schema


def _type(schema: dict, nullable: bool = False) -> str:
    kind = schema.get("type")
    if "$ref" in schema:
        text = "mapping"
    elif kind == "array":
        text = f"list of {_type(schema['items'])}" if schema.get("items") else "list"
    elif kind == "object":
        values = schema.get("additionalProperties")
        text = f"mapping of {_type(values)}" if isinstance(values, dict) and values else "mapping"
    elif "anyOf" in schema:
        text = " or ".join(_type(s) for s in schema["anyOf"])
    else:
        text = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}.get(kind, "any")
    return f"{text} or null" if nullable else text


def _allowed(schema: dict) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    bounds = {"minimum": ">= {}", "exclusiveMinimum": "> {}", "maximum": "<= {}", "exclusiveMaximum": "< {}"}
    parts = [fmt.format(schema[k]) for k, fmt in bounds.items() if k in schema]
    if "pattern" in schema:
        parts.append(f"`{schema['pattern']}`")
    if "maxLength" in schema:
        parts.append(f"at most {schema['maxLength']} characters")
    if "minItems" in schema or "minProperties" in schema:
        parts.append(f"at least {schema.get('minItems', schema.get('minProperties'))}")
    if schema.get("type") == "array" and (items := _allowed(schema.get("items", {}))):
        parts.append(f"each {items}")
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        if values := _allowed(schema["additionalProperties"]):
            parts.append(f"each {values}")
    return ", ".join(parts)


def _show(value: object) -> str:
    return "`" + json.dumps(value) + "`"


def page_with_keys(page: str) -> str:
    """The page with its generated section replaced by the table made from today's schema."""
    head, found, rest = page.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise ValueError(f"{PAGE} lacks the markers {BEGIN!r} ... {END!r}")
    return f"{head}{BEGIN}\n\n{keys_table()}\n\n{END}{tail}"


if __name__ == "__main__":
    PAGE.write_text(page_with_keys(PAGE.read_text()))
    print(f"wrote the study keys into {PAGE}")
