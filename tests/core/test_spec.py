from pathlib import Path

import pytest

from autoresearch_operator.spec import OrgSpecError, load_orgs, org_from_resource


def body(**spec):
    return {
        "apiVersion": "autoresearch.dev/v1alpha1",
        "kind": "ResearchOrg",
        "metadata": {"name": "baseline"},
        "spec": {"program": "Lower val_bpb.", **spec},
    }


def test_defaults_match_the_documented_ones():
    org = org_from_resource(body())
    assert org.spec.trainer.timeBudgetSeconds == 300
    assert org.spec.parallelism == 1
    assert org.spec.proposer.type == "mutate"
    assert org.spec.keepPolicy.minImprovement == 0.0
    assert org.branch == "autoresearch/baseline"
    assert org.program_text == "Lower val_bpb."


def test_every_candidate_gets_one_window_sized_by_profile_unless_startup_is_set():
    full = org_from_resource(body()).spec.trainer
    assert (full.startup_seconds, full.window_seconds) == (120, 120 + 300 + 20)
    assert full.harness_deadline_seconds == 120 + 300 + 20 + 600
    tiny = org_from_resource(
        body(trainer={"profile": "tiny", "timeBudgetSeconds": 15})
    ).spec.trainer
    assert (tiny.startup_seconds, tiny.window_seconds) == (10, 10 + 15 + 10)
    assert tiny.harness_deadline_seconds == 10 + 15 + 10 + 120
    set_ = org_from_resource(body(trainer={"startupSeconds": 0})).spec.trainer
    assert set_.window_seconds == 0 + 300 + 20


def test_grace_seconds_is_gone_the_harness_owns_the_clock():
    with pytest.raises(
        OrgSpecError, match=r"spec\.trainer\.graceSeconds: unknown field.*startupSeconds"
    ):
        org_from_resource(body(trainer={"graceSeconds": 60}))


def test_unknown_field_is_named_with_the_allowed_ones():
    with pytest.raises(OrgSpecError) as err:
        org_from_resource(body(trainer={"timeBudget": 60}))
    msg = str(err.value)
    assert "spec.trainer.timeBudget: unknown field" in msg
    assert "timeBudgetSeconds" in msg


def test_wrong_enum_value_names_field_allowed_values_and_input():
    with pytest.raises(OrgSpecError) as err:
        org_from_resource(body(proposer={"type": "gpt"}))
    msg = str(err.value)
    assert "spec.proposer.type" in msg and "'openai' or 'mutate'" in msg and "'gpt'" in msg


def test_openai_proposer_requires_a_model():
    with pytest.raises(OrgSpecError, match="proposer.model is required"):
        org_from_resource(body(proposer={"type": "openai"}))


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"parallelism": 0}, "spec.parallelism"),
        ({"budget": {"maxExperiments": 0}}, "spec.budget.maxExperiments"),
        ({"keepPolicy": {"minImprovement": -1}}, "spec.keepPolicy.minImprovement"),
        ({"trainer": {"profile": "huge"}}, "spec.trainer.profile"),
        ({"trainer": {"startupSeconds": -1}}, "spec.trainer.startupSeconds"),
        ({"trainer": {"startupSeconds": 3601}}, "spec.trainer.startupSeconds"),
    ],
)
def test_out_of_range_values_name_their_field(spec, field):
    with pytest.raises(OrgSpecError, match=field.replace(".", r"\.")):
        org_from_resource(body(**spec))


def test_program_and_program_ref_are_exclusive():
    b = body(programRef={"name": "cm"})
    with pytest.raises(OrgSpecError, match="exactly one of spec.program and spec.programRef"):
        org_from_resource(b)


def test_program_ref_reads_the_file_beside_org_yaml_locally(tmp_path: Path):
    (tmp_path / "program.md").write_text("# objective\nbe fast\n")
    (tmp_path / "org.yaml").write_text(
        "apiVersion: autoresearch.dev/v1alpha1\nkind: ResearchOrg\nmetadata: {name: a}\n"
        "spec:\n  programRef: {name: a-program, key: program.md}\n"
    )
    [org] = load_orgs(tmp_path / "org.yaml")
    assert org.program_text.startswith("# objective")


def test_multi_document_file_skips_other_kinds_and_rejects_duplicate_names(tmp_path: Path):
    doc = "apiVersion: autoresearch.dev/v1alpha1\nkind: ResearchOrg\nmetadata: {name: %s}\nspec: {program: x}\n"
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n"
    path = tmp_path / "contest.yaml"
    path.write_text("---\n".join([doc % "a", cm, doc % "b"]))
    assert [o.name for o in load_orgs(path)] == ["a", "b"]
    path.write_text("---\n".join([doc % "a", doc % "a"]))
    with pytest.raises(OrgSpecError, match="repeated: a"):
        load_orgs(path)


def test_bad_name_and_bad_yaml_are_clear(tmp_path: Path):
    with pytest.raises(OrgSpecError, match="DNS-1123"):
        org_from_resource({**body(), "metadata": {"name": "Bad_Name"}})
    path = tmp_path / "org.yaml"
    path.write_text("spec: [unclosed")
    with pytest.raises(OrgSpecError, match="not valid YAML"):
        load_orgs(path)
