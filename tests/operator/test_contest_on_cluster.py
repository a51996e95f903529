"""A ResearchContest on the cluster, end to end: two mutate entrants with different front-matter,
two rounds, the operator killed mid-round. The contest makes its orgs with identical terms and
owns them, puts an org back on the terms when a user edits it, survives the kill, reaches round
2 and Completed with standings, keeps its lineage in git, and takes its orgs with it when it is
deleted, leaving the git history."""

from __future__ import annotations

import secrets
import time
import urllib.request

import pytest
import testcluster
from kubernetes import client
from kubernetes.client.rest import ApiException
from on_cluster import GROUP, PLURAL, REPO, VERSION, research_org

from autoresearch_operator.core.gitrepo import OrgRepo

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CONTESTS = "researchcontests"
CONTEST_CRD = REPO / "crds" / "researchcontest.yaml"
NAME = "cup"
ENTRANTS = {
    "lr": "---\nexplore: ['*LR*']\nstep: 2\n---\nTune the learning rates, in big steps.\n",
    "steady": "---\navoid: ['*LR*']\nstep: 0.5\n---\nLeave the learning rates alone.\n",
}


def contest_body() -> dict:
    """Two entrants under the terms a tiny test org gets, the baseline only: the rounds, terms,
    kill and lineage are what this test is about; tests/integration/test_local_contest.py trains
    candidates in a contest."""
    org = research_org("unused", 1)["spec"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResearchContest",
        "metadata": {"name": NAME},
        "spec": {
            "entrants": [
                {"name": name, "program": text, "proposer": {"type": "mutate", "seed": seed}}
                for seed, (name, text) in enumerate(ENTRANTS.items(), start=1)
            ],
            "terms": {k: org[k] for k in ("trainer", "budget", "keepPolicy")},
            "rounds": 2,
        },
    }


def test_a_contest_runs_two_rounds_on_equal_terms_through_an_operator_kill(
    cluster, namespace, process_node, operator_process
):
    applied = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CONTEST_CRD), check=False
    )
    assert applied.returncode == 0, applied.stderr
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    f"crd/{CONTESTS}.{GROUP}")  # fmt: skip
    operator = operator_process
    operator.start()  # after the CRD: kopf's scanning is off, it resolves resources at start
    process_node(f"cpu-{secrets.token_hex(3)}")
    objects = client.CustomObjectsApi(cluster.api)
    core, batch = client.CoreV1Api(cluster.api), client.BatchV1Api(cluster.api)
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, CONTESTS, contest_body())

    def contest() -> dict:
        return objects.get_namespaced_custom_object(GROUP, VERSION, namespace, CONTESTS, NAME)

    def orgs(round_: int | None = None) -> dict[str, dict]:
        selector = f"{GROUP}/contest={NAME}" + (f",{GROUP}/round={round_}" if round_ else "")
        listed = objects.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, label_selector=selector
        )
        return {o["metadata"]["name"]: o for o in listed["items"]}

    def events(name: str, reason: str) -> list[str]:
        listed = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},reason={reason}"
        )
        return [e.message for e in listed.items]

    def wait(check, timeout: float, what: str):
        try:
            return testcluster.wait_for(check, timeout, what, interval=1)
        except TimeoutError:
            raise AssertionError(
                f"{what}: {contest().get('status')}\n{operator.log_tail()}"
            ) from None

    # 1. Round 1: one org per entrant, identical but for program.md and proposer, owned.
    first = wait(lambda: len(orgs(1)) == 2 and orgs(1), 60, "the round-1 orgs")
    uid = contest()["metadata"]["uid"]
    specs = [o["spec"] for o in first.values()]
    assert {k for k in specs[0].keys() | specs[1].keys() if specs[0].get(k) != specs[1].get(k)} == {
        "program",
        "proposer",
    }
    assert sorted(s["program"] for s in specs) == sorted(ENTRANTS.values())
    for org in first.values():
        (owner,) = org["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (
            "ResearchContest", uid, True, True,
        )  # fmt: skip

    # 2. An entrant's override of the terms is put back, with an Event on the contest and org.
    objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, f"{NAME}-r1-lr",
        {"spec": {"trainer": {"timeBudgetSeconds": 60}}},
    )  # fmt: skip
    wait(
        lambda: orgs(1)[f"{NAME}-r1-lr"]["spec"]["trainer"]["timeBudgetSeconds"] == 3,
        30, "the override to be restored",
    )  # fmt: skip
    for target in (NAME, f"{NAME}-r1-lr"):
        (restored, *_) = wait(lambda t=target: events(t, "TermsRestored"), 30, "TermsRestored")
        assert "spec.trainer.timeBudgetSeconds" in restored

    # 3. The operator dies while round 1 trains, and a new one takes over.
    def training() -> bool:
        jobs = batch.list_namespaced_job(namespace, label_selector=f"{GROUP}/org").items
        return any(j.status.active and j.metadata.name.startswith(f"{NAME}-r1-") for j in jobs)

    wait(training, 180, "a round-1 experiment to train")
    operator.kill()
    time.sleep(2)
    operator.start()

    # 4. Both rounds run; the contest completes with standings, lineage and its orgs.
    def completed() -> dict | None:
        status = contest().get("status") or {}
        assert status.get("phase") != "Failed", status
        return status if status.get("phase") == "Completed" else None

    status = wait(completed, 420, "the contest to complete")
    assert (status["round"], status["rounds"], status["entrants"]) == (2, 2, 2)
    standings = status["current"]["standings"]
    assert sorted(s["rank"] for s in standings) == [1, 2]
    assert {s["entrant"] for s in standings} == set(ENTRANTS)
    assert all(s["done"] and s["experiments"] == 1 for s in standings), standings
    # nothing kept: both are at the shared start, so neither leads
    assert all(s["improvement"] == 0 for s in standings) and status["verdict"].startswith("tied")
    assert status["leader"] and status["best"] == standings[0]["valBpb"]
    assert [h["round"] for h in status["history"]] == [1]
    assert status["gpuHours"] > 0
    assert sorted(orgs(2)) == sorted(f"{NAME}-r2-{e}" for e in ENTRANTS)
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == uid for o in orgs(2).values())
    assert len(events(NAME, "RoundFinished")) >= 2
    header = cluster.kubectl("get", CONTESTS, "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "ROUND", "LEADER", "ENTRANTS", "BEST", "GPU-HOURS", "AGE"]
    repo = OrgRepo(operator.state_dir / "repos" / namespace)
    programs = repo.log(f"refs/heads/programs/{NAME}")
    assert [m.count("Contest-Round:") for _, m in programs] == [1, 1]
    assert "Contest-Round: 2" in programs[0][1]
    with urllib.request.urlopen(f"{operator.metrics_url}/metrics", timeout=10) as resp:
        series = [line for line in resp.read().decode().splitlines() if f'contest="{NAME}"' in line]
    assert [line.rsplit(" ", 1)[1] for line in series if "contest_round{" in line] == ["2.0"]

    # 5. Deleting the contest deletes its orgs (garbage collector) and keeps the git history.
    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, CONTESTS, NAME)
    wait(lambda: not orgs(), 120, "the garbage collector to delete the contest's orgs")

    def contest_gone() -> bool:
        try:
            contest()
        except ApiException as err:
            return err.status == 404
        return False

    wait(contest_gone, 60, "the contest to be deleted")
    branches = {f"autoresearch/{NAME}-r{r}-{e}" for r in (1, 2) for e in ENTRANTS}
    assert all(repo.resolve(f"refs/heads/{b}") for b in branches)
    assert repo.resolve(f"refs/heads/programs/{NAME}") == programs[0][0]
    with urllib.request.urlopen(f"{operator.metrics_url}/metrics", timeout=10) as resp:
        assert f'contest="{NAME}"' not in resp.read().decode()
