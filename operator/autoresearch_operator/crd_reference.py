"""A markdown reference of the ResearchOrg CRD, rendered from its generated openAPIV3Schema.

It reads the CRD dict (`crd.build_crd()`), not the pydantic models, so it documents exactly what
the API server validates and `kubectl explain` shows. `docs/crd-reference.md` is this module's
output (`make docs`); a test proves the committed file is current.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from typing import Any

COMMAND = "autoresearch crd --reference > docs/crd-reference.md"
CONTEST_COMMAND = "autoresearch crd --kind contest --reference > docs/crd-contest-reference.md"


def generated(kind: str, command: str) -> str:
    return f"Generated from the {kind} CRD by `{command}` (or `make docs`); do not edit by hand."


GENERATED = generated("ResearchOrg", COMMAND)

FieldRow = tuple[str, dict[str, Any], bool]  # path, schema node, required


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell: one line, pipes escaped (also in code spans)."""
    return " ".join(text.split()).replace("|", "\\|")


def _text(text: str) -> str:
    """Prose for a cell: `<org>` must show, not vanish as an HTML tag."""
    return _cell(html.escape(text, quote=False))


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return f"`{text}`"


def type_of(node: dict[str, Any]) -> str:
    kind = node.get("type", "")
    if kind == "array":
        return f"[]{type_of(node.get('items', {}))}"
    if kind == "object":
        extra = node.get("additionalProperties")
        if "properties" not in node and isinstance(extra, dict):
            return f"map[string]{type_of(extra)}"
        if "properties" not in node and node.get("x-kubernetes-preserve-unknown-fields"):
            return "object (free-form)"
    return kind or "any"


def constraints_of(node: dict[str, Any]) -> list[str]:
    """What the API server enforces on this field beyond its type, in a fixed order."""
    out: list[str] = []
    if "minimum" in node:
        out.append(f"{'>' if node.get('exclusiveMinimum') is True else '>='} {node['minimum']}")
    if "maximum" in node:
        out.append(f"{'<' if node.get('exclusiveMaximum') is True else '<='} {node['maximum']}")
    if "enum" in node:
        out.append("one of " + ", ".join(_code(v) for v in node["enum"]))
    if "pattern" in node:
        out.append(f"pattern {_code(node['pattern'])}")
    if "format" in node:
        out.append(f"format {node['format']}")
    for key, label in (("minLength", "length >="), ("maxLength", "length <="),
                       ("minItems", "items >="), ("maxItems", "items <="),
                       ("minProperties", "keys >="), ("maxProperties", "keys <=")):  # fmt: skip
        if key in node:
            out.append(f"{label} {node[key]}")
    return out


def objects(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object with declared properties under `node`, parents before children."""
    if "properties" in node:
        yield path, node
        for name, child in node["properties"].items():
            yield from objects(child, f"{path}.{name}")
    if "items" in node:
        yield from objects(node["items"], f"{path}[]")


def fields(node: dict[str, Any], path: str) -> list[FieldRow]:
    required = set(node.get("required", []))
    return [
        (f"{path}.{name}", child, name in required) for name, child in node["properties"].items()
    ]


def _object_section(path: str, node: dict[str, Any]) -> list[str]:
    lines = [f"### `{path}`", ""]
    if node.get("description"):
        lines += [_text(node["description"]), ""]
    lines += [
        "| field | type | default | constraints | required | description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for field_path, child, required in fields(node, path):
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{field_path}`",
                    _cell(type_of(child)),
                    _cell(_code(child["default"])) if "default" in child else "",
                    _cell("; ".join(constraints_of(child))),
                    "yes" if required else "",
                    _text(child.get("description", "")),
                ]
            )
            + " |"
        )
    return [*lines, ""]


def validation_rules(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """CEL rules (x-kubernetes-validations) anywhere under `node`, with the path they apply to."""
    for rule in node.get("x-kubernetes-validations", []):
        yield path, rule
    for name, child in (node.get("properties") or {}).items():
        yield from validation_rules(child, f"{path}.{name}")
    if "items" in node:
        yield from validation_rules(node["items"], f"{path}[]")


def render_reference(crd: dict[str, Any], command: str = COMMAND) -> str:
    names = crd["spec"]["names"]
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema = version["schema"]["openAPIV3Schema"]
    api_version = f"{crd['spec']['group']}/{version['name']}"
    short = ", ".join(f"`{s}`" for s in names.get("shortNames", []))
    lines = [
        f"# {names['kind']} reference",
        "",
        generated(names["kind"], command),
        "",
        f"`{api_version}`, kind `{names['kind']}`, {crd['spec']['scope'].lower()}; "
        f"plural `{names['plural']}`" + (f", short names {short}" if short else "") + ".",
        "",
        _text(schema.get("description", "")),
        "",
        f"`kubectl explain {names['singular']}.spec` (or `.status`, or any field path below) shows the "
        "same descriptions from the cluster.",
        "",
    ]
    for top in ("spec", "status"):
        if top not in schema["properties"]:
            continue
        lines += [f"## {top}", ""]
        for path, node in objects(schema["properties"][top], top):
            lines += _object_section(path, node)

    rules = list(validation_rules(schema, "")) if schema.get("properties") else []
    if rules:
        lines += [
            "## Validation rules",
            "",
            "CEL rules the API server checks on create and update; the message is what "
            "`kubectl apply` prints when one fails.",
            "",
            "| on | rule | message |",
            "| --- | --- | --- |",
        ]
        for path, rule in rules:
            lines.append(
                f"| `{path.lstrip('.') or '(root)'}` | {_cell(_code(rule['rule']))} "
                f"| {_text(rule.get('message', ''))} |"
            )
        lines.append("")

    columns = version.get("additionalPrinterColumns", [])
    if columns:
        lines += [
            "## Printer columns",
            "",
            f"What `kubectl get {names['plural']}` shows.",
            "",
            "| column | type | JSON path | description |",
            "| --- | --- | --- | --- |",
        ]
        for c in columns:
            lines.append(
                f"| {_cell(c['name'])} | {c['type']} | `{c['jsonPath']}` "
                f"| {_text(c.get('description', ''))} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def render(kind: str = "org") -> str:
    if kind == "contest":
        from .crd_contest import build_crd as build_contest_crd

        return render_reference(build_contest_crd(), CONTEST_COMMAND)
    from .crd import build_crd

    return render_reference(build_crd())
