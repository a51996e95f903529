from pathlib import Path

from autoresearch_operator.crd import build_crd, render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_is_generated_from_the_spec_models():
    committed = (ROOT / "crds" / "researchorg.yaml").read_text()
    assert committed == render(), "run: .venv/bin/autoresearch crd > crds/researchorg.yaml"


def _walk(node, path):
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_every_spec_and_status_field_has_a_description_for_kubectl_explain():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = [
        path
        for top in ("spec", "status")
        for path, node in _walk(schema["properties"][top], top)
        if not node.get("description") and not path.endswith("[]")
    ]
    assert missing == []


def test_schema_is_structural_no_unions_or_refs_left():
    text = render()
    for forbidden in ("anyOf", "$ref", "oneOf", "title:", "additionalProperties: false"):
        assert forbidden not in text


def test_printer_columns_show_what_people_compare():
    cols = [c["name"] for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols == [
        "Phase",
        "Best",
        "Best-Test",
        "Baseline",
        "Sigma",  # priority 1: with -o wide
        "Experiments",
        "Kept",
        "Running",
        "GPU-hours",
        "Age",
    ]
