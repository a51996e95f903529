"""A contest's standings as the ResearchContest status, and back.

One shape for the cluster (`.status` of a ResearchContest) and for local runs
(`<workdir>/contests/<name>/status.json`), so `autoresearch compare --contest` and `plot
--contest` read either the same way.
"""

from __future__ import annotations

from typing import Any

from .core.contest import RoundRecord, Standing, Standings, programs_branch


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(x, digits)


def standing_status(s: Standing) -> dict[str, Any]:
    out = {
        "entrant": s.entrant,
        "org": s.org,
        "rank": s.rank,
        "valBpb": _r(s.best.mean) if s.best else None,
        "valBpbSd": _r(s.best.sd) if s.best and s.best.sd is not None else None,
        "runs": s.best.n if s.best else None,
        "bestCommit": s.best_commit,
        "improvement": _r(s.improvement),
        "improvementLow": _r(s.ci_low),
        "improvementHigh": _r(s.ci_high),
        "keepRate": _r(s.keep_rate, 4),
        "kept": s.kept,
        "experiments": s.experiments,
        "crashed": s.crashed,
        "gpuHours": _r(s.gpu_hours),
        "verificationGpuHours": _r(s.verification_gpu_hours),
        "llmTokens": s.llm_tokens,
        "cost": _r(s.cost, 4),
        "gainPerGpuHour": _r(s.gain_per_gpu_hour),
        "done": s.done,
    }
    return {k: v for k, v in out.items() if v is not None}


def round_status(table: Standings, rec: RoundRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "round": table.round,
        "verdict": table.verdict,
        "tied": list(table.tied),
        "startCommit": rec.start_commit,
        "programsCommit": rec.commit,
        "standings": [standing_status(s) for s in table.entrants],
        "lineage": [
            {"entrant": e, "parents": list(rec.parents.get(e, []))} for e in sorted(rec.programs)
        ],
        "done": table.done,
    }
    if table.leader:
        out["leader"] = table.leader
    if table.start is not None:
        out["startValBpb"] = _r(table.start.mean)
    if table.noise.sigma is not None:
        out["sigma"] = _r(table.noise.sigma)
    if table.p_value is not None:
        out["pValue"] = _r(table.p_value, 6)
    return out


def contest_status(
    contest: str, total_rounds: int, history: list[tuple[Standings, RoundRecord]]
) -> dict[str, Any]:
    """The status fields a contest reports (phase, message and conditions are the adapter's)."""
    if not history:
        return {"round": 0, "rounds": total_rounds, "programsBranch": programs_branch(contest)}
    table, rec = history[-1]
    top = table.entrants[0] if table.entrants else None
    out: dict[str, Any] = {
        "round": table.round,
        "rounds": total_rounds,
        "programsBranch": programs_branch(contest),
        "verdict": table.verdict,
        "entrants": len(table.entrants),
        "gpuHours": _r(sum(s.gpu_hours for t, _ in history for s in t.entrants)),
        "current": round_status(table, rec),
        "history": [round_status(t, r) for t, r in history[:-1]],
    }
    out["leader"] = table.leader or ("tied: " + ", ".join(table.tied) if table.tied else None)
    if top is not None and top.best is not None:
        out["best"] = _r(top.best.mean)
    return {k: v for k, v in out.items() if v is not None}
