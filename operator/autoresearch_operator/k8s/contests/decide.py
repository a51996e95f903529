"""What a contest's controller decides, as plain data in and out (no Kubernetes calls).

runner.py applies these: the ResearchOrg bodies a round owns, the patch that puts a drifted org
back on the contest's terms, the status patch, and the phase with its sentence.
"""

from __future__ import annotations

from typing import Any

from ...contest_spec import CONTEST_KIND, drifted_fields
from ...core.contest import Standings, standings_table
from ...spec import API_GROUP, API_VERSION
from ..builders import owner_reference
from ..status import COMPLETED, RUNNING

EVENT_LINES = 6  # entrants listed in a RoundFinished Event


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: changed keys, nested dicts
    as their own patches, and None for each key `new` no longer has. Empty when they are equal."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif key not in old or before != value:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def contest_owner(contest: dict[str, Any]) -> dict[str, Any]:
    """The owner reference that makes the garbage collector delete a contest's orgs with it."""
    return owner_reference({**contest, "apiVersion": f"{API_GROUP}/{API_VERSION}",
                            "kind": CONTEST_KIND})  # fmt: skip


def owned_org(body: dict[str, Any], contest: dict[str, Any]) -> dict[str, Any]:
    """`body` (contest_spec.org_body) in the contest's namespace, owned by the contest."""
    metadata = {
        **body["metadata"],
        "namespace": contest["metadata"]["namespace"],
        "ownerReferences": [contest_owner(contest)],
    }
    return {**body, "metadata": metadata}


def owned_by(org: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in org["metadata"].get("ownerReferences") or [])


def restore(
    expected: dict[str, Any], actual: dict[str, Any], contest: dict[str, Any]
) -> tuple[list[str], dict[str, Any] | None]:
    """(the drifted spec fields, the merge patch that puts `actual` back on the terms), or
    ([], None) when the org is as the contest made it. An org of the contest's name that it
    does not own yet (made by hand, or left from an earlier contest) is adopted by the patch."""
    fields = drifted_fields(expected["spec"], actual.get("spec") or {})
    meta, want = actual["metadata"], expected["metadata"]
    patch: dict[str, Any] = {}
    if fields:
        patch["spec"] = merge_patch(actual.get("spec") or {}, expected["spec"])
    labels = {k: v for k, v in want["labels"].items() if (meta.get("labels") or {}).get(k) != v}
    annotations = {
        k: v for k, v in want["annotations"].items() if (meta.get("annotations") or {}).get(k) != v
    }
    metadata: dict[str, Any] = {}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    if not owned_by(actual, contest["metadata"]["uid"]):
        others = [r for r in meta.get("ownerReferences") or [] if not r.get("controller")]
        metadata["ownerReferences"] = [*others, contest_owner(contest)]
    if metadata:
        patch["metadata"] = metadata
    return fields, patch or None


def phase_of(
    round: int, rounds: int, table: Standings, org_failures: dict[str, str]
) -> tuple[str, str]:
    """The contest's phase and the sentence saying where it stands."""
    if table.done and round >= rounds:
        return COMPLETED, f"all {rounds} rounds done; round {round}: {table.verdict}"
    done = sum(1 for s in table.entrants if s.done)
    message = (
        f"round {round} of {rounds}: {done} of {len(table.entrants)} entrants have spent their "
        f"budget; {table.verdict}"
    )
    for entrant, why in sorted(org_failures.items()):
        message += f"; {entrant}'s org failed: {why}"
    return RUNNING, message


def round_finished(table: Standings) -> str:
    """The RoundFinished Event: the verdict and the top of the standings, one line each."""
    lines = standings_table(table).splitlines()
    return "\n".join(lines[: 2 + EVENT_LINES])


def terms_restored(org: str, fields: list[str]) -> str:
    return (
        f"{org}: {', '.join(fields)} restored to the contest's terms; an org of a contest "
        f"runs exactly the terms every entrant gets (change the contest's spec.terms instead)"
    )
