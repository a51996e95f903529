"""What `make run` relies on: --quick and --proposer auto turn an org.yaml into a CPU quick start."""

from pathlib import Path

import pytest

from autoresearch_operator.cli import _apply_overrides, build_parser
from autoresearch_operator.spec import load_orgs

EXAMPLE = Path(__file__).resolve().parents[2] / "program-examples" / "baseline" / "org.yaml"


def overridden(*flags: str):
    [org] = load_orgs(EXAMPLE)
    return _apply_overrides(org, build_parser().parse_args(["run", str(EXAMPLE), *flags]))


def test_quick_means_tiny_profile_short_budget_few_experiments():
    org = overridden("--quick")
    assert org.spec.trainer.profile == "tiny"
    assert org.spec.trainer.timeBudgetSeconds == 15
    assert org.spec.budget.maxExperiments == 6
    # the whole window (start-up + budget + export) of a quick run stays under a minute
    assert org.spec.trainer.window_seconds == 10 + 15 + 10
    assert (
        overridden(
            "--quick", "--time-budget", "3", "--max-experiments", "2"
        ).spec.budget.maxExperiments
        == 2
    )


def test_auto_without_an_api_key_falls_back_to_mutate(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert overridden("--proposer", "auto").spec.proposer.type == "mutate"


def test_auto_with_an_api_key_uses_the_llm_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    proposer = overridden("--proposer", "auto").spec.proposer
    assert (proposer.type, proposer.baseURL) == ("openai", "http://127.0.0.1:9/v1")
    assert proposer.model == "gpt-4o-mini"  # from org.yaml, which wins over OPENAI_MODEL


def test_org_proposer_is_kept_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert overridden().spec.proposer.type == "openai"
    assert overridden("--proposer", "mutate").spec.proposer.type == "mutate"


def test_piped_output_keeps_the_comparison_table_wide_whatever_columns_says():
    from autoresearch_operator.cli import _piped_width

    assert _piped_width({}) == 160
    assert _piped_width({"COLUMNS": ""}) == 160  # an exported but empty COLUMNS
    assert _piped_width({"COLUMNS": "80"}) == 160  # a narrow shell would cut the org names
    assert _piped_width({"COLUMNS": "300"}) == 300
