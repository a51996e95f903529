"""What the loop tells a proposer: the trainer's window and device from the spec, what the best's
run reported, and for a rejected proposal the first lines of what was sent."""

from __future__ import annotations

import json
from pathlib import Path

from autoresearch_operator.core.gitrepo import OrgRepo
from autoresearch_operator.core.journal import Journal
from autoresearch_operator.core.loop import ResearchLoop, attempt_excerpt, trainer_device
from autoresearch_operator.core.records import (
    ExperimentRecord,
    Proposal,
    ProposalContext,
    ProposalRejected,
    TokenUsage,
    TrainResult,
)
from autoresearch_operator.executor import ExperimentJob
from autoresearch_operator.spec import TrainerSpec, org_from_resource

REJECTED_REPLY = (
    "<think>\nMaybe flash attention?\nYes.\n</think>\n"
    "HYPOTHESIS: FlashAttention-3 is faster on an H100.\n\n<<<<<<< SEARCH\n"
    "import torch\n=======\nimport torch\nfrom flash_attn_interface import flash_attn_func\n"
    ">>>>>>> REPLACE\n" + "# " + "x" * 300 + "\n" + "line\n" * 20
)


class RecordingProposer:
    """Rejects experiment 1 with REJECTED_REPLY; otherwise lowers SCORE a little."""

    name = "recording"

    def __init__(self) -> None:
        self.contexts: dict[int, ProposalContext] = {}

    def propose(self, ctx: ProposalContext) -> Proposal:
        self.contexts[ctx.experiment] = ctx
        if ctx.experiment == 1:
            raise ProposalRejected("imports flash_attn_interface", TokenUsage(9, 9), REJECTED_REPLY,
                                   attempt=REJECTED_REPLY.split("</think>\n", 1)[1])  # fmt: skip
        return Proposal(f"try {ctx.experiment}", f"SCORE = {2.0 - ctx.experiment / 10}\n")


class ReportingExecutor:
    """Scores SCORE and reports figures about the run, as train.py's stats do."""

    slots = 1

    def cancel(self) -> None:
        pass

    def run(self, job: ExperimentJob, on_progress=None) -> TrainResult:
        score = float(job.train_py.split("=")[1])
        return TrainResult(status="ok", val_bpb=score, num_steps=100 + job.experiment,
                           tokens_per_second=1.5e6, peak_vram_mb=40_000.0, mfu_percent=38.0,
                           claimed=["num_steps", "tokens_per_second", "peak_vram_mb", "mfu_percent"])  # fmt: skip


def run_org(tmp_path: Path, trainer: dict) -> RecordingProposer:
    org = org_from_resource({
        "metadata": {"name": "ctx"},
        "spec": {"program": "lower SCORE", "trainer": trainer, "budget": {"maxExperiments": 4},
                 "keepPolicy": {"noiseRuns": 1, "confirmRuns": 0, "screenSigmas": 0}},
    })  # fmt: skip
    proposer = RecordingProposer()
    repo = OrgRepo.open_or_init(tmp_path / "repo", "SCORE = 2.0\n")
    journal = Journal(tmp_path / "orgs" / "ctx")
    ResearchLoop(org, repo, journal, ReportingExecutor(), proposer).run()
    return proposer


def test_the_context_carries_the_trainer_window_and_device_from_the_spec(tmp_path: Path) -> None:
    trainer = {"timeBudgetSeconds": 240, "startupSeconds": 90, "profile": "full",
               "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"}}  # fmt: skip
    ctx = run_org(tmp_path, trainer).contexts[2]
    assert (ctx.time_budget_seconds, ctx.startup_seconds, ctx.export_seconds) == (240, 90, 20)
    assert ctx.device == "1 nvidia.com/gpu, on nodes labelled nvidia.com/gpu.product=NVIDIA-H200"


def test_the_context_carries_the_run_of_the_best_as_it_moves(tmp_path: Path) -> None:
    proposer = run_org(tmp_path, {"timeBudgetSeconds": 60})
    steps = {n: ctx.best_result.num_steps if ctx.best_result else None
             for n, ctx in proposer.contexts.items()}  # fmt: skip
    # Each proposal is asked for while the experiment before it trains: 1 before the baseline
    # was decided, 3 while 2 trained (the baseline still the best), 4 after 2 was kept.
    assert steps == {1: None, 2: 100, 3: 100, 4: 102}


def test_a_rejected_proposal_keeps_the_first_lines_of_its_reply_for_the_next_prompts(
    tmp_path: Path,
) -> None:
    proposer = run_org(tmp_path, {"timeBudgetSeconds": 60})
    rejected = next(r for r in proposer.contexts[2].history if r.experiment == 1)
    assert rejected.rejected and rejected.detail == "imports flash_attn_interface"
    lines = rejected.attempt.splitlines()
    assert lines[0] == "HYPOTHESIS: FlashAttention-3 is faster on an H100."
    assert "from flash_attn_interface import flash_attn_func" in lines
    assert len(lines) == 8 and "Maybe flash attention?" not in rejected.attempt
    journaled = Journal(tmp_path / "orgs" / "ctx").load()
    assert next(r for r in journaled if r.experiment == 1).attempt == rejected.attempt


def test_attempt_excerpt_cuts_long_lines_and_keeps_the_first_lines() -> None:
    assert attempt_excerpt("x" * 500) == "x" * 200
    assert attempt_excerpt("\n\nHYPOTHESIS: a\nb\n") == "HYPOTHESIS: a\nb"
    assert attempt_excerpt("") == ""


def test_a_journal_line_from_before_attempts_existed_still_loads() -> None:
    line = {"experiment": 4, "description": "(no valid candidate)", "outcome": "crash",
            "reason": "invalid-proposal", "detail": "no SEARCH block", "usage": {}}  # fmt: skip
    record = ExperimentRecord.from_json(json.loads(json.dumps(line)))
    assert record.attempt == "" and record.rejected


def test_trainer_device_says_what_the_spec_asks_for() -> None:
    assert trainer_device(TrainerSpec()) == (
        "1 nvidia.com/gpu (the spec names no GPU model or memory)"
    )
    labelled = TrainerSpec(
        resources={"limits": {"nvidia.com/gpu": 2, "memory": "64Gi"}},
        nodeSelector={"nvidia.com/gpu.memory": "81559", "kubernetes.io/os": "linux",
                      "cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
    )  # fmt: skip
    assert trainer_device(labelled) == (
        "2 nvidia.com/gpu, on nodes labelled cloud.google.com/gke-accelerator=nvidia-h100-80gb, "
        "nvidia.com/gpu.memory=81559"
    )
    assert trainer_device(TrainerSpec(resources={"limits": {"cpu": 4}})) == (
        "no GPU in spec.trainer.resources (the spec names no GPU model or memory)"
    )
    assert trainer_device(TrainerSpec(profile="tiny")).startswith("the tiny profile")
