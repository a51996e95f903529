"""Contests: program.md against program.md under identical terms, ranked with their confidence.

Two things live here, both plain data in and out:

- **standings**: each entrant's org ledger in, a ranking out. Every org of a round starts from the
  same commit and re-measures it (its baseline runs), so the start is estimated from all of them
  together; an entrant's improvement is that start's mean minus its best's mean, with a t
  interval from the noise pooled over the whole round (same code, same hardware, same seeds
  rule). An entrant that kept nothing is at the start: improvement exactly 0, however its own
  baseline runs fell. A leader is named only when its best beats the runner-up's at the contest's alpha
  (one-sided t-test, scipy); otherwise the entrants not separated from the top are tied.
- **the round record**: the contest's durable state is its `programs/<contest>` branch. Each
  round is one commit holding every entrant's program.md (`<entrant>.md`), with the round, the
  commit every entrant starts from, each program's parents and the previous round's standings
  in its message. An operator that restarts reads the round from git; nothing else is needed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from scipy import stats

from .gitrepo import OrgRepo
from .ledger import Estimate, Ledger, Noise, estimate, pooled_noise
from .records import ExperimentRecord, Outcome

PROGRAMS_BRANCH_PREFIX = "programs/"
_TRAILER = re.compile(r"^(Contest-Round|Start-Commit|Parents-[a-z0-9-]+): ?(.*)$", re.M)


@dataclass(frozen=True)
class EntrantInput:
    """What standings need about one entrant in one round."""

    entrant: str
    org: str
    records: list[ExperimentRecord]
    open_runs: list = field(default_factory=list)
    done: bool = False  # its org has spent its budget


@dataclass(frozen=True)
class Standing:
    entrant: str
    org: str
    rank: int
    best: Estimate | None  # the entrant's best commit over its measurement runs
    best_commit: str | None
    improvement: float | None  # start mean - best mean (positive: better than the start)
    ci_low: float | None  # the (1 - alpha) two-sided t interval of the improvement
    ci_high: float | None
    experiments: int
    kept: int
    crashed: int
    gpu_hours: float
    verification_gpu_hours: float
    llm_tokens: int
    cost: float | None
    done: bool

    @property
    def keep_rate(self) -> float | None:
        candidates = self.experiments - 1  # the baseline is no candidate
        return self.kept / candidates if candidates > 0 else None

    @property
    def gain_per_gpu_hour(self) -> float | None:
        if self.improvement is None or self.gpu_hours <= 0:
            return None
        return self.improvement / self.gpu_hours

    @property
    def gain_per_gpu_hour_ci(self) -> tuple[float, float] | None:
        if self.ci_low is None or self.ci_high is None or self.gpu_hours <= 0:
            return None
        return self.ci_low / self.gpu_hours, self.ci_high / self.gpu_hours


@dataclass(frozen=True)
class Standings:
    round: int
    alpha: float
    start: Estimate | None  # the shared start commit over every entrant's baseline runs
    noise: Noise  # pooled over the round
    entrants: list[Standing]  # by rank
    leader: str | None  # named only when separated from the runner-up at alpha
    tied: list[str]  # the entrants not separated from the top (leader None), else []
    p_value: float | None  # top vs runner-up
    done: bool  # every entrant has spent its budget

    @property
    def verdict(self) -> str:
        if not self.entrants or self.entrants[0].best is None:
            return "no results yet"
        if self.leader is not None:
            return f"{self.leader} leads (p={self.p_value:.3g} vs the runner-up)"
        if self.noise.sigma is None:
            return f"tied: {', '.join(self.tied)} (no noise estimate yet)"
        return f"tied: {', '.join(self.tied)} (not separated at alpha {self.alpha:g})"


def _t_quantile(alpha: float, df: int) -> float:
    return float(stats.t.ppf(1 - alpha / 2, df))


def standings(round: int, entrants: list[EntrantInput], alpha: float) -> Standings:
    ledgers = {e.entrant: Ledger(e.records, e.open_runs) for e in entrants}
    all_runs = [r for ledger in ledgers.values() for r in ledger.runs]
    noise = pooled_noise(all_runs)
    # each org commits the start as its own experiment 0 (same tree, its own sha): pool them
    start = estimate(
        r
        for ledger in ledgers.values()
        if ledger.baseline_record is not None
        for r in ledger.runs
        if r.commit == ledger.baseline_record.commit
    )
    sigma = noise.sigma
    rows = []
    for e in entrants:
        ledger = ledgers[e.entrant]
        best = ledger.best
        improvement = ci_low = ci_high = None
        baseline = ledger.baseline_record
        if best is not None and baseline is not None and ledger.best_commit == baseline.commit:
            # no keep: its best is the start itself (the same tree under its own sha), so it is
            # measured by every entrant's baseline runs and improved by exactly nothing
            best = start
            improvement = ci_low = ci_high = 0.0
        elif best is not None and start is not None:
            improvement = start.mean - best.mean
            if sigma is not None and noise.df > 0:
                half = _t_quantile(alpha, noise.df) * sigma * math.sqrt(1 / start.n + 1 / best.n)
                ci_low, ci_high = improvement - half, improvement + half
        counts = ledger.counts
        rows.append(
            Standing(
                entrant=e.entrant,
                org=e.org,
                rank=0,
                best=best,
                best_commit=ledger.best_commit,
                improvement=improvement,
                ci_low=ci_low,
                ci_high=ci_high,
                experiments=counts["total"],
                kept=sum(1 for r in e.records if r.outcome is Outcome.KEEP and r.experiment > 0),
                crashed=counts["crashed"],
                gpu_hours=ledger.gpu_seconds / 3600,
                verification_gpu_hours=ledger.verification_gpu_seconds / 3600,
                llm_tokens=ledger.llm_tokens,
                cost=ledger.llm_cost_usd,
                done=e.done,
            )  # fmt: skip
        )
    rows.sort(key=lambda s: (s.best is None, s.best.mean if s.best else 0.0, s.entrant))
    ranked = [_with_rank(s, i + 1) for i, s in enumerate(rows)]
    leader, tied, p_value = _separate(ranked, noise, alpha)
    return Standings(
        round=round, alpha=alpha, start=start, noise=noise, entrants=ranked, leader=leader,
        tied=tied, p_value=p_value, done=bool(entrants) and all(e.done for e in entrants),
    )  # fmt: skip


def _with_rank(s: Standing, rank: int) -> Standing:
    return Standing(**{**s.__dict__, "rank": rank})


def p_better(top: Estimate, other: Estimate, noise: Noise) -> float | None:
    """One-sided p-value that `top`'s val_bpb is lower than `other`'s (pooled sigma, its df)."""
    if noise.sigma is None or noise.df <= 0:
        return None
    if noise.sigma == 0:
        return 0.0 if other.mean > top.mean else 1.0
    se = noise.sigma * math.sqrt(1 / top.n + 1 / other.n)
    return float(stats.t.sf((other.mean - top.mean) / se, noise.df))


def _separate(
    ranked: list[Standing], noise: Noise, alpha: float
) -> tuple[str | None, list[str], float | None]:
    scored = [s for s in ranked if s.best is not None]
    if not scored:
        return None, [], None
    top = scored[0]
    assert top.best is not None
    if len(scored) == 1:
        return None, [top.entrant], None
    p_runner_up = None
    tied = [top.entrant]
    for other in scored[1:]:
        assert other.best is not None
        p = p_better(top.best, other.best, noise)
        if other is scored[1]:
            p_runner_up = p
        if p is None or p >= alpha:
            tied.append(other.entrant)
    if p_runner_up is not None and p_runner_up < alpha:
        return top.entrant, [], p_runner_up
    return None, tied, p_runner_up


# -- the programs branch: one commit per round ------------------------------------------------


@dataclass(frozen=True)
class RoundRecord:
    """One round as committed on programs/<contest>."""

    round: int
    commit: str  # the programs commit
    start_commit: str  # the train.py commit every entrant of the round starts from
    programs: dict[str, str]  # entrant -> program.md
    parents: dict[str, list[str]]  # entrant -> the previous round's programs it came from
    message: str


def programs_branch(contest: str) -> str:
    return f"{PROGRAMS_BRANCH_PREFIX}{contest}"


def program_path(entrant: str) -> str:
    return f"{entrant}.md"


def rounds(repo: OrgRepo, contest: str) -> list[RoundRecord]:
    """Every round committed for the contest, oldest first."""
    out = []
    for sha, message in reversed(repo.log(f"refs/heads/{programs_branch(contest)}")):
        trailers = dict(_TRAILER.findall(message))
        if "Contest-Round" not in trailers:
            continue
        parents = {
            key.removeprefix("Parents-"): [p for p in value.split(", ") if p]
            for key, value in trailers.items()
            if key.startswith("Parents-")
        }
        names = repo.repo.git.ls_tree("--name-only", sha).split()
        programs = {
            name.removesuffix(".md"): repo.read_file(sha, name)
            for name in names
            if name.endswith(".md")
        }
        out.append(
            RoundRecord(
                int(trailers["Contest-Round"]),
                sha,
                trailers["Start-Commit"].strip(),
                programs,
                parents,
                message,
            )  # fmt: skip
        )
    return out


def commit_round(
    repo: OrgRepo,
    contest: str,
    round: int,
    start_commit: str,
    programs: Mapping[str, str],
    parents: Mapping[str, list[str]],
    summary: str,
) -> RoundRecord:
    """Commit a round's programs on programs/<contest>; idempotent: a round already committed
    is returned as it is (a restart between the commit and what follows it redoes nothing)."""
    done = {r.round: r for r in rounds(repo, contest)}
    if round in done:
        return done[round]
    branch = programs_branch(contest)
    head = repo.resolve(f"refs/heads/{branch}")
    lines = [summary.rstrip(), ""]
    lines += [f"Contest-Round: {round}", f"Start-Commit: {start_commit}"]
    lines += [f"Parents-{e}: {', '.join(p)}" for e, p in sorted(parents.items())]
    message = "\n".join(lines) + "\n"
    files = {program_path(e): text for e, text in programs.items()}
    stale = set()
    if head is not None:  # entrants that left the contest do not linger in the tree
        stale = {n for n in repo.repo.git.ls_tree("--name-only", head).split()} - set(files)
    sha = repo.commit_files(head, files, message)
    if stale:
        sha = _drop_files(repo, sha, stale, message)
    repo.update_branch(branch, sha, head)
    return RoundRecord(round, sha, start_commit, dict(programs), dict(parents), message)


def _drop_files(repo: OrgRepo, commit: str, paths: set[str], message: str) -> str:
    """The same commit (same parent, same message) without `paths`."""
    g = repo.repo.git
    entries = [
        line for line in g.ls_tree(commit).splitlines() if line.split("\t", 1)[1] not in paths
    ]
    tree = g.mktree(istream=None, input="\n".join(entries) + "\n") if entries else None
    parents = repo.repo.commit(commit).parents
    args = [str(tree)] + [x for p in parents for x in ("-p", p.hexsha)] + ["-m", message]
    return str(g.commit_tree(*args))


def standings_table(s: Standings) -> str:
    """The standings as plain text: commit messages, Events and logs."""
    lines = [f"round {s.round} standings: {s.verdict}"]
    if s.start is not None:
        lines.append(f"start: val_bpb {s.start.mean:.4f} over {s.start.n} runs")
    for e in s.entrants:
        best = "-" if e.best is None else f"{e.best.mean:.4f} ({e.best.n} runs)"
        gain = "-" if e.improvement is None else f"{e.improvement:+.4f}"
        if e.kept == 0 and e.improvement is not None:
            gain += " (no keep)"
        elif e.ci_low is not None and e.ci_high is not None:
            gain += f" [{e.ci_low:+.4f}, {e.ci_high:+.4f}]"
        per_hour = "-" if e.gain_per_gpu_hour is None else f"{e.gain_per_gpu_hour:+.3f}/GPU-h"
        lines.append(
            f"{e.rank}. {e.entrant}: best {best}, gain {gain}, {per_hour}, "
            f"kept {e.kept}/{max(e.experiments - 1, 0)}, {e.gpu_hours:.3f} GPU-h"
        )
    return "\n".join(lines)


def kept_and_crashed(records: list[ExperimentRecord]) -> tuple[list[str], list[str]]:
    """Descriptions of the kept candidates and of the crashes: what meta-research reads."""
    kept = [r.description for r in records if r.outcome is Outcome.KEEP and r.experiment > 0]
    crashed = [
        f"{r.description} [{r.reason or 'crash'}]" for r in records if r.outcome is Outcome.CRASH
    ]
    return kept, crashed
