"""What the contest controller decides, without a cluster: the orgs it owns, how it puts an org
that left the terms back, the status patch and the phase."""

from __future__ import annotations

import copy

from autoresearch_operator.contest_spec import TERMS_ANNOTATION, contest_from_resource, org_body
from autoresearch_operator.core.contest import Standing, Standings
from autoresearch_operator.core.ledger import Estimate, Noise
from autoresearch_operator.k8s.contests import decide

START = "a" * 40
CONTEST = {
    "apiVersion": "autoresearch.dev/v1alpha1",
    "kind": "ResearchContest",
    "metadata": {"name": "cup", "namespace": "research", "uid": "contest-uid"},
    "spec": {
        "entrants": [
            {"name": "lr", "program": "---\nexplore: ['LR']\n---\nTune LR.\n"},
            {"name": "depth", "program": "Go deeper.\n", "proposer": {"type": "mutate", "seed": 2}},
        ],
        "terms": {
            "trainer": {"profile": "tiny", "timeBudgetSeconds": 3, "resources": {}},
            "budget": {"maxExperiments": 2},
            "keepPolicy": {"noiseRuns": 1, "confirmRuns": 0},
        },
        "rounds": 2,
    },
}


def expected(entrant: str = "lr") -> dict:
    contest = contest_from_resource(CONTEST)
    program = next(e.program for e in contest.spec.entrants if e.name == entrant)
    return decide.owned_org(org_body(contest, None, 1, entrant, program, START), CONTEST)


def test_merge_patch_sets_what_changed_and_removes_what_is_gone():
    old = {"a": 1, "b": {"c": 2, "d": 3}, "gone": {"x": 1}, "same": [1]}
    new = {"a": 1, "b": {"c": 5, "d": 3}, "same": [1], "added": "y"}
    assert decide.merge_patch(old, new) == {"b": {"c": 5}, "gone": None, "added": "y"}
    assert decide.merge_patch(new, new) == {}


def test_an_org_is_owned_by_its_contest_so_the_garbage_collector_deletes_it_with_it():
    org = expected()
    assert org["metadata"]["namespace"] == "research"
    (owner,) = org["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "autoresearch.dev/v1alpha1", "kind": "ResearchContest", "name": "cup",
        "uid": "contest-uid", "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip
    assert decide.owned_by(org, "contest-uid") and not decide.owned_by(org, "other")


def test_entrants_differ_only_in_program_and_proposer():
    a, b = expected("lr")["spec"], expected("depth")["spec"]
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert differ == ["program", "proposer"]
    assert a["startCommit"] == START and a["trainer"]["timeBudgetSeconds"] == 3


def test_an_org_as_the_contest_made_it_needs_nothing():
    org = expected()
    served = copy.deepcopy(org)  # as the API server returns it: kopf's annotations, a status
    served["metadata"]["annotations"]["kopf.zalando.org/last-handled-configuration"] = "{}"
    served["status"] = {"phase": "Running"}
    assert decide.restore(org, served, CONTEST) == ([], None)


def test_an_override_of_the_terms_is_named_and_patched_back():
    org = expected()
    edited = copy.deepcopy(org)
    edited["spec"]["trainer"]["timeBudgetSeconds"] = 30
    edited["spec"]["budget"]["maxGPUHours"] = 5  # a field the terms leave unset
    edited["spec"]["paused"] = True
    fields, patch = decide.restore(org, edited, CONTEST)
    assert fields == [
        "spec.budget.maxGPUHours", "spec.paused", "spec.trainer.timeBudgetSeconds",
    ]  # fmt: skip
    assert patch == {
        "spec": {"trainer": {"timeBudgetSeconds": 3}, "budget": {"maxGPUHours": None},
                 "paused": False},
    }  # fmt: skip
    message = decide.terms_restored("cup-r1-lr", fields)
    assert "spec.trainer.timeBudgetSeconds" in message and "spec.terms" in message


def test_a_lost_terms_annotation_is_put_back_and_an_unowned_org_is_adopted():
    org = expected()
    bare = copy.deepcopy(org)
    del bare["metadata"]["annotations"][TERMS_ANNOTATION]
    bare["metadata"]["ownerReferences"] = []
    fields, patch = decide.restore(org, bare, CONTEST)
    assert fields == []
    assert patch is not None and "spec" not in patch
    assert patch["metadata"]["annotations"] == {
        TERMS_ANNOTATION: org["metadata"]["annotations"][TERMS_ANNOTATION]
    }
    assert patch["metadata"]["ownerReferences"] == org["metadata"]["ownerReferences"]


def _table(done: bool, leader: str | None = None) -> Standings:
    def row(entrant: str, rank: int, mean: float) -> Standing:
        return Standing(
            entrant=entrant, org=f"cup-r1-{entrant}", rank=rank, best=Estimate(mean, 1, None),
            best_commit=None, improvement=1.0 - mean, ci_low=None, ci_high=None, experiments=2,
            kept=1, crashed=0, gpu_hours=0.01, verification_gpu_hours=0.0, llm_tokens=0,
            cost=None, done=done,
        )  # fmt: skip

    return Standings(
        round=1, alpha=0.05, start=Estimate(1.0, 2, None), noise=Noise(None, 0, 0),
        entrants=[row("lr", 1, 0.9), row("depth", 2, 0.95)], leader=leader,
        tied=[] if leader else ["lr", "depth"], p_value=0.01 if leader else None, done=done,
    )  # fmt: skip


def test_a_contest_completes_only_after_its_last_round_is_done():
    assert decide.phase_of(1, 2, _table(done=True), {})[0] == "Running"
    phase, message = decide.phase_of(1, 2, _table(done=False), {"depth": "baseline crashed"})
    assert phase == "Running"
    assert "0 of 2 entrants" in message and "depth's org failed: baseline crashed" in message
    phase, message = decide.phase_of(2, 2, _table(done=True), {})
    assert phase == "Completed" and "tied: lr, depth" in message


def test_the_round_finished_event_lists_the_standings():
    text = decide.round_finished(_table(done=True, leader="lr"))
    assert text.splitlines()[0].startswith("round 1 standings: lr leads")
    assert "1. lr" in text and "2. depth" in text
