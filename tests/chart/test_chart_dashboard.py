"""The Grafana dashboard queries only what the operator exports, by the labels it exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoresearch_operator.core.contest import Standing, Standings
from autoresearch_operator.core.ledger import Noise
from autoresearch_operator.core.records import (
    CrashReason,
    ExperimentRecord,
    Outcome,
    Role,
    RunRecord,
    TokenUsage,
    TrainResult,
)
from autoresearch_operator.metrics import OperatorMetrics

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "charts" / "autoresearch-operator" / "files"
    / "dashboard.json"
)  # fmt: skip

# PromQL words that are not metric names: aggregation modifiers, vector matching, set operators.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "atan2",
}  # fmt: skip
# After these, a parenthesised list of label names follows, e.g. `sum by (namespace, org)`.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      | (?P<range>\[[^\]]*\])
      | (?P<duration>(?:[0-9]+(?:ms|[smhdwy]))+(?![\w:]))
      | (?P<number>(?:0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?![\w:]))
      | (?P<variable>\$\{?\w+\}?)
      | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
      | (?P<punct>=~|!~|!=|==|>=|<=|[-+*/%^(){},=<>])
      | (?P<space>\s+)""",
    re.VERBOSE,
)


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Every metric a PromQL expression selects, with the label names its matcher uses."""
    tokens, position = [], 0
    for match in TOKEN.finditer(expr):
        assert match.start() == position, f"cannot read {expr[position:]!r} in {expr!r}"
        position = match.end()
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
    assert position == len(expr), f"cannot read {expr[position:]!r} in {expr!r}"
    found: list[tuple[str, set[str]]] = []
    depth, i = 0, 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "{":
            depth += 1
        elif text == "}":
            depth -= 1
        elif kind == "name" and depth == 0:
            if text in LABEL_LIST_KEYWORDS and following == "(":
                i = _skip_group(tokens, i + 1)
                continue
            # a name before "(" is a function, one before "by"/"without" an aggregation
            if text not in KEYWORDS and following not in ("(", "by", "without"):
                labels = set()
                if following == "{":
                    j = i + 2
                    while tokens[j][1] != "}":
                        if tokens[j][0] == "name" and tokens[j + 1][1] in ("=", "!=", "=~", "!~"):
                            labels.add(tokens[j][1])
                        j += 1
                found.append((text, labels))
        i += 1
    return found


def _skip_group(tokens: list[tuple[str | None, str]], start: int) -> int:
    """The index after the parenthesised list that opens at tokens[start]."""
    end = start
    while tokens[end][1] != ")":
        end += 1
    return end + 1


def test_the_promql_reader_finds_metrics_and_skips_everything_else():
    expr = (
        'sum by (namespace, org, reason) (rate(autoresearch_experiments_total{org=~"$org", '
        'outcome="crash"}[$__rate_interval] offset 5m))\n/ ignoring (reason) group_left\n'
        "sum without (le) (up) * 1e3 > bool 0.5 unless on (org) max(x_y:z{a!='b,c'})"
    )
    assert selectors(expr) == [
        ("autoresearch_experiments_total", {"org", "outcome"}),
        ("up", set()),
        ("x_y:z", {"a"}),
    ]


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from the operator's registry after a few experiments."""
    metrics = OperatorMetrics()
    base = {"started_at": 1000.0, "finished_at": 1400.0, "usage": TokenUsage(900, 300),
            "cost_usd": 0.0054}  # fmt: skip

    def result(val_bpb: float, test_bpb: float | None = None) -> TrainResult:
        return TrainResult(status="ok", val_bpb=val_bpb, test_bpb=test_bpb, total_seconds=330.0)

    def run(n: int, k: int, role: Role, commit: str, val_bpb: float) -> RunRecord:
        return RunRecord(n, k, role, commit, k, result(val_bpb, test_bpb=val_bpb + 0.02))

    noise_runs = [run(0, 0, Role.BASELINE, "a", 1.1), run(0, 1, Role.BASELINE, "a", 1.12)]
    records = [
        ExperimentRecord(0, "baseline", Outcome.KEEP, commit="a", val_bpb=1.1,
                         result=result(1.1, test_bpb=1.12), runs=noise_runs, **base),
        ExperimentRecord(1, "lr up", Outcome.DISCARD, commit="b", val_bpb=1.2,
                         result=result(1.2), p_value=0.4, **base,
                         runs=[run(1, 0, Role.SCREEN, "b", 1.05), run(1, 1, Role.CONFIRM, "b", 1.2),
                               run(1, 2, Role.CHAMPION, "a", 1.11)]),
        ExperimentRecord(2, "depth", Outcome.CRASH, commit="c", reason=CrashReason.NAN.value,
                         result=TrainResult(status="crash", reason="nan"), **base),
    ]  # fmt: skip
    metrics.replay("research", "explorer", records)
    metrics.set_running("research", "explorer", 1)
    metrics.set_phase("research", "explorer", "Running")
    metrics.observe_proposal("research", "explorer", 12.5)
    metrics.set_contest("research", "cup", [contest_round()])
    families = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    names: dict[str, set[str]] = {}
    for family in families:
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def contest_round() -> Standings:
    """A round of two entrants, one with a result and one without."""

    def standing(entrant: str, rank: int, improvement: float | None) -> Standing:
        return Standing(
            entrant=entrant, org=f"cup-r1-{entrant}", rank=rank, best=None, best_commit=None,
            improvement=improvement, ci_low=None, ci_high=None, experiments=2, kept=1,
            crashed=0, gpu_hours=0.2, verification_gpu_hours=0.0, llm_tokens=0, cost=None,
            done=False,
        )  # fmt: skip

    return Standings(
        round=1, alpha=0.05, start=None, noise=Noise(None, 0, 0),
        entrants=[standing("a", 1, 0.02), standing("b", 2, None)], leader=None, tied=["a"],
        p_value=None, done=False,
    )  # fmt: skip


def targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_exported_family_has_samples_so_the_comparison_means_something():
    names = exported()
    for family in ("autoresearch_experiments_total", "autoresearch_gpu_seconds_total",
                   "autoresearch_experiment_duration_seconds_bucket",
                   "autoresearch_proposal_latency_seconds_count", "autoresearch_org_phase",
                   "autoresearch_running_experiments", "autoresearch_best_val_bpb",
                   "autoresearch_best_test_bpb", "autoresearch_last_val_bpb",
                   "autoresearch_baseline_val_bpb", "autoresearch_llm_tokens_total",
                   "autoresearch_llm_cost_usd_total",
                   "autoresearch_runs_total", "autoresearch_verification_gpu_seconds_total",
                   "autoresearch_noise_sigma_bpb", "autoresearch_contest_round",
                   "autoresearch_contest_improvement_bpb", "autoresearch_contest_gpu_hours",
                   "autoresearch_contest_rank"):  # fmt: skip
        assert family in names


@pytest.mark.parametrize("title, expr", targets(), ids=[t for t, _ in targets()])
def test_dashboard_queries_only_metrics_the_operator_exports(title, expr):
    names = exported()
    used = selectors(expr)
    assert used, f"{title}: no metric in {expr!r}"
    for metric, labels in used:
        assert metric in names, f"{title}: {metric} is not exported (have: {sorted(names)})"
        assert labels <= names[metric], f"{title}: {metric} has no label {labels - names[metric]}"


def test_dashboard_shows_what_people_compare_filtered_by_an_org_variable():
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["org"]["multi"] and variables["org"]["includeAll"]
    metric, label = re.fullmatch(
        r"label_values\((\w+), *(\w+)\)", variables["org"]["definition"]
    ).groups()
    assert label in exported()[metric]
    used = {metric for _, expr in targets() for metric, _ in selectors(expr)}
    for wanted in ("autoresearch_best_val_bpb", "autoresearch_best_test_bpb",
                   "autoresearch_last_val_bpb", "autoresearch_noise_sigma_bpb",
                   "autoresearch_experiments_total", "autoresearch_gpu_seconds_total",
                   "autoresearch_verification_gpu_seconds_total",
                   "autoresearch_llm_tokens_total", "autoresearch_running_experiments"):  # fmt: skip
        assert wanted in used
    for title, expr in targets():  # an org panel follows $org, a contest panel $contest
        contest = any(m.startswith("autoresearch_contest_") for m, _ in selectors(expr))
        assert ('contest=~"$contest"' if contest else 'org=~"$org"') in expr, title


def test_the_contests_row_follows_a_contest_variable_and_shows_each_entrant():
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["contest"]["multi"] and variables["contest"]["includeAll"]
    metric, label = re.fullmatch(
        r"label_values\((\w+), *(\w+)\)", variables["contest"]["definition"]
    ).groups()
    assert label in exported()[metric]
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ["Contests"]
    below = [p for p in dashboard["panels"] if p["gridPos"]["y"] > rows[0]["gridPos"]["y"]]
    used = {
        metric for p in below for t in p.get("targets", []) for metric, _ in selectors(t["expr"])
    }
    assert used == {"autoresearch_contest_round", "autoresearch_contest_improvement_bpb",
                    "autoresearch_contest_rank", "autoresearch_contest_gpu_hours"}  # fmt: skip
    for panel in below:
        if panel["title"] != "Contest round":
            assert "entrant" in panel["targets"][0]["expr"], panel["title"]


def test_every_metric_the_operator_exports_is_on_the_dashboard():
    used = {metric for _, expr in targets() for metric, _ in selectors(expr)}
    families = {m.name for m in OperatorMetrics().registry.collect()}
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    missing = {f for f in families if not any(f + suffix in used for suffix in suffixes)}
    assert families and not missing, f"no panel shows {sorted(missing)}"
