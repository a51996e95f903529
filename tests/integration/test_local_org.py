"""A whole org on the CPU: the real openai client against a scripted server, the real harness,
real tiny training, real git. Each scripted reply is chosen to force one outcome."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from autoresearch_operator.core.gitrepo import OrgRepo
from autoresearch_operator.core.journal import TSV_HEADER, Journal
from autoresearch_operator.core.loop import ResearchLoop
from autoresearch_operator.core.records import Outcome
from autoresearch_operator.executor import LocalExecutor, baseline_train_py
from autoresearch_operator.proposers import make_proposer
from autoresearch_operator.spec import org_from_resource
from support.fake_openai_server import FakeOpenAI

pytestmark = pytest.mark.slow


def edit(hypothesis: str, search: str, replace: str) -> str:
    return f"HYPOTHESIS: {hypothesis}\n\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


STARVE_LR = edit(
    "learning rates a million times smaller",
    "MATRIX_LR = 0.04  # Muon, for the 2D weights inside the blocks\n"
    "EMBEDDING_LR = 0.6  # AdamW, token embedding (scaled by (width/768)^-0.5)\n"
    "UNEMBEDDING_LR = 0.004  # AdamW, lm_head (scaled by (width/768)^-0.5)",
    "MATRIX_LR = 0.00000004  # Muon, for the 2D weights inside the blocks\n"
    "EMBEDDING_LR = 0.0000006  # AdamW, token embedding (scaled by (width/768)^-0.5)\n"
    "UNEMBEDDING_LR = 0.000000004  # AdamW, lm_head (scaled by (width/768)^-0.5)",
)
RAISES = edit(
    "a bug",
    "optimizers = [muon, adamw]",
    'optimizers = [muon, adamw]\nraise RuntimeError("candidate bug")',
)
PEEKS = edit(
    "let attention see the whole sequence",
    "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)",
    "        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)",
)
SHORTER_WARMDOWN = edit(
    "a shorter warm-down",
    "WARMDOWN_RATIO = 0.5  # fraction of the time budget spent ramping the LR down",
    "WARMDOWN_RATIO = 0.3  # fraction of the time budget spent ramping the LR down",
)


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch):
    server = FakeOpenAI()
    server.start()
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
    yield server
    server.stop()


def test_llm_org_records_keep_discard_and_every_kind_of_crash(
    prepared_workdir: Path, tmp_path: Path, llm
):
    for reply in (
        STARVE_LR,
        RAISES,
        "I think we should try something bold!",
        PEEKS,
        SHORTER_WARMDOWN,
    ):
        llm.reply(reply, prompt_tokens=1000, completion_tokens=50)
    org = org_from_resource({
        "metadata": {"name": "llm-org"},
        "spec": {
            "program": "Lower val_bpb. PROGRAM-MARKER",
            "trainer": {"profile": "tiny", "timeBudgetSeconds": 3, "startupSeconds": 20},
            "proposer": {"type": "openai", "model": "fake-model", "baseURL": llm.base_url,
                         "apiKeyEnv": "TEST_LLM_KEY", "maxRetries": 0,
                         # each reply its own proposal: the garbage one is not repaired
                         "repairTurns": 0},
            # five experiments: the rejected proposal is none (it trains nothing)
            "budget": {"maxExperiments": 5},
            # one run per experiment, so that each reply forces one outcome; the CLI test
            # below runs noise runs and confirmations
            "keepPolicy": {"noiseRuns": 1, "confirmRuns": 0, "screenSigmas": 0},
        },
    })  # fmt: skip
    repo = OrgRepo.open_or_init(tmp_path / "repo", baseline_train_py())
    journal = Journal(tmp_path / "orgs" / org.name)
    executor = LocalExecutor(
        prepared_workdir / "data", journal.directory / "experiments", device="cpu"
    )
    state = ResearchLoop(
        org, repo, journal, executor, make_proposer(org.spec.proposer.model_dump())
    ).run()

    recs = journal.load()
    summary = [(r.experiment, r.outcome, r.reason) for r in recs]
    assert summary[:5] == [
        (0, Outcome.KEEP, None),
        (1, Outcome.DISCARD, None),  # a starved model is far worse than the baseline
        (2, Outcome.CRASH, "exception"),
        (3, Outcome.CRASH, "invalid-proposal"),
        (4, Outcome.CRASH, "rejected-by-harness"),
    ], summary
    assert recs[5].outcome in (Outcome.KEEP, Outcome.DISCARD), recs[5].detail
    assert "candidate bug" in recs[2].result.log_tail
    assert "sees the future" in (recs[4].detail or "")
    assert recs[1].val_bpb > recs[0].val_bpb

    # git: every trained candidate under a tried ref, the branch at the best kept commit
    tried = repo.tried_experiments(org.name)
    assert sorted(tried) == [0, 1, 2, 4, 5]
    assert "is_causal=False" in repo.read_train_py(tried[4])
    assert repo.message(tried[1]) == "learning rates a million times smaller"
    kept = [r for r in recs if r.outcome is Outcome.KEEP]
    assert repo.branch_head(org.branch) == kept[-1].commit == state.best_commit
    assert state.best_val_bpb == min(r.val_bpb for r in kept)

    # the held-out test split: scored for the baseline and every keep, never for a discard
    assert all(r.result.test_bpb is not None for r in kept)
    assert recs[1].result.test_bpb is None
    # every trained run is charged its harness-measured time, crashes included
    assert all(r.result.gpu_seconds > 0 for r in recs if r.result)
    assert recs[2].result.training_seconds > 0
    window = (recs[0].result.startup_seconds, recs[0].result.time_budget, recs[0].result.seed)
    assert window == (20, 3, 0)

    # logs: the TSV mirrors the JSONL; tokens are counted per experiment
    rows = journal.tsv.read_text().splitlines(keepends=True)
    assert rows[0] == TSV_HEADER and len(rows) == 7
    assert [row.split("\t")[3] for row in rows[1:]] == [r.outcome.value for r in recs]
    assert [r.usage.total for r in recs] == [0, 1050, 1050, 1050, 1050, 1050]

    # the LLM saw program.md, the best train.py, and the crash it caused two experiments earlier
    first, fourth = llm.requests[0].body, llm.requests[3].body
    assert "PROGRAM-MARKER" in str(first["messages"]) and "MATRIX_LR = 0.04" in str(
        first["messages"]
    )
    assert "candidate bug" in str(fourth["messages"])


def test_interrupted_cli_run_resumes_mid_confirmation_without_repeating_or_losing_runs(
    prepared_workdir: Path, tmp_path: Path
):
    """`autoresearch run`, killed with SIGINT while a confirmation run trains, then run again to
    completion: every run is trained and journaled once, and the decision uses all of them."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    workdir = tmp_path / "runs"
    shutil.copytree(prepared_workdir / "data", workdir / "data")
    example = Path(__file__).resolve().parents[2] / "program-examples" / "baseline" / "org.yaml"
    org = yaml.safe_load(example.read_text())
    # screen: false sends every candidate to confirmation, so the kill lands in one for sure
    org["spec"]["keepPolicy"] = {"noiseRuns": 2, "confirmRuns": 1, "screen": False}
    org["spec"]["program"] = (example.parent / "program.md").read_text()  # inline: no ConfigMap
    del org["spec"]["programRef"]
    org_yaml = tmp_path / "org.yaml"
    org_yaml.write_text(yaml.safe_dump(org))
    cmd = [sys.executable, "-m", "autoresearch_operator.cli", "run", str(org_yaml), "--workdir", str(workdir),
           "--quick", "--time-budget", "3", "--max-experiments", "3", "--proposer", "mutate",
           "--device", "cpu", "--vocab-size", "512"]  # fmt: skip
    journal = Journal(workdir / "orgs" / "baseline")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    confirmation = journal.directory / "experiments" / "0001-run-1" / "train.log"
    while not confirmation.exists():
        assert proc.poll() is None and time.monotonic() < deadline, (
            "experiment 1's confirmation run never started training"
        )
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    leftovers = [
        p for p in Path("/proc").glob("[0-9]*/cmdline") if _mentions(p, str(journal.directory))
    ]
    assert leftovers == [], "a harness or training process outlived the interrupted run"
    assert "run the same command again to resume" in out
    records, open_runs = journal.read()
    assert [r.experiment for r in records] == [0] and len(records[0].runs) == 2
    assert [r.key for r in open_runs] in ([(1, 0)], [(1, 0), (1, 1)])
    screened = open_runs[0]

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    recs = journal.load()
    assert [r.experiment for r in recs] == [0, 1, 2]
    # baseline 2 noise runs; each candidate: screen, confirmation, champion re-run; each once
    assert [[(r.run, r.role.value) for r in rec.runs] for rec in recs] == [
        [(0, "baseline"), (1, "baseline")],
        [(0, "screen"), (1, "confirm"), (2, "champion")],
        [(0, "screen"), (1, "confirm"), (2, "champion")],
    ]
    assert recs[1].runs[0] == screened  # the screening run was not trained again
    assert all(r.p_value is not None for r in recs[1:]), [r.detail for r in recs]
    assert [r.seed for r in recs[1].runs] == [1000, 1001, 1001]
    assert "confirming" in done.stdout
    repo = OrgRepo(workdir / "repo")
    assert sorted(repo.tried_experiments("baseline")) == [0, 1, 2]
    assert (
        repo.branch_head("autoresearch/baseline")
        == [r for r in recs if r.outcome is Outcome.KEEP][-1].commit
    )

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "already done" in again.stdout and len(journal.load()) == 3

    compare = subprocess.run([sys.executable, "-m", "autoresearch_operator.cli", "compare", "--workdir", str(workdir)],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "COLUMNS": "240"})  # fmt: skip
    assert "baseline" in compare.stdout and "mutate" in compare.stdout
    assert "σ (runs)" in compare.stdout and "confirmed" in compare.stdout
    png = workdir / "progress.png"
    subprocess.run([sys.executable, "-m", "autoresearch_operator.cli", "plot", "--workdir", str(workdir),
                    "--output", str(png)], check=True)  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def _mentions(cmdline: Path, text: str) -> bool:
    try:
        return text in cmdline.read_bytes().decode(errors="replace")
    except OSError:  # the process ended while we looked
        return False
