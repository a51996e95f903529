"""The prompt an LLM proposer sends carries the program (its prose, then the strategy of its
front-matter), what a change must fit (time, device, imports), the best train.py with what its run
reported, recent results, crash logs and rejected proposals; docs/proposers.md shows it whole."""

from __future__ import annotations

import sys
from pathlib import Path

from autoresearch_operator.core.records import (
    ExperimentRecord,
    Outcome,
    ProposalContext,
    TrainResult,
)
from autoresearch_operator.proposers import build_messages
from autoresearch_operator.trainer_modules import trainer_packages

ROOT = Path(__file__).resolve().parents[2]


def make_context(train_py: str, program_md: str, **overrides: object) -> ProposalContext:
    history = [
        ExperimentRecord(1, "baseline", Outcome.KEEP, val_bpb=1.234567),
        ExperimentRecord(2, "raise MATRIX_LR to 0.08", Outcome.DISCARD, val_bpb=1.25),
        ExperimentRecord(
            3, "double DEPTH", Outcome.CRASH, reason="nan", detail="loss went NaN at step 40"
        ),
    ]
    values: dict[str, object] = {
        "org": "demo",
        "experiment": 4,
        "program": program_md,
        "best_train_py": train_py,
        "best_val_bpb": 1.234567,
        "history": history,
        "log_tails": {3: "step 39 loss 3.1\nstep 40 loss nan\nFAIL: loss is NaN"},
    }
    values.update(overrides)
    return ProposalContext(**values)  # type: ignore[arg-type]


def test_messages_are_system_then_user_with_the_reply_format(
    train_py: str, program_md: str
) -> None:
    messages = build_messages(make_context(train_py, program_md))
    assert [m["role"] for m in messages] == ["system", "user"]
    system = messages[0]["content"]
    for marker in (
        "HYPOTHESIS:",
        "<<<<<<< SEARCH",
        "=======",
        ">>>>>>> REPLACE",
        "```python",
        "val_bpb",
    ):
        assert marker in system


def test_user_prompt_carries_program_best_source_score_and_task(
    train_py: str, program_md: str
) -> None:
    user = build_messages(make_context(train_py, program_md))[1]["content"]
    assert "tangerine-gradient" in user
    assert f"```python\n{train_py.rstrip()}\n```" in user
    assert "val_bpb 1.234567" in user
    assert "Propose experiment 4" in user


def test_history_lists_outcomes_scores_descriptions_and_crash_reasons(
    train_py: str, program_md: str
) -> None:
    user = build_messages(make_context(train_py, program_md))[1]["content"]
    assert "- #1 keep val_bpb=1.234567: baseline" in user
    assert "- #2 discard val_bpb=1.250000: raise MATRIX_LR to 0.08" in user
    assert "- #3 crash val_bpb=-: double DEPTH [nan; loss went NaN at step 40]" in user
    assert user.index("#1 keep") < user.index("#2 discard") < user.index("#3 crash")
    assert "FAIL: loss is NaN" in user


def test_long_crash_logs_keep_their_end_and_old_history_is_dropped(
    train_py: str, program_md: str
) -> None:
    history = [ExperimentRecord(n, f"idea {n}", Outcome.DISCARD, val_bpb=1.3) for n in range(1, 51)]
    tail = "early noise " * 1000 + "Traceback: CUDA out of memory"
    ctx = make_context(train_py, program_md, history=history, log_tails={50: tail})
    user = build_messages(ctx, max_history=10, max_log_chars=500)[1]["content"]
    assert "#41 discard" in user and "#40 discard" not in user
    assert "Traceback: CUDA out of memory" in user
    assert user.count("early noise") < 60


def test_first_experiment_says_there_is_no_history_and_no_score(
    train_py: str, program_md: str
) -> None:
    ctx = make_context(
        train_py, program_md, history=[], log_tails={}, best_val_bpb=None, experiment=1
    )
    user = build_messages(ctx)[1]["content"]
    assert "None yet" in user and "not measured yet" in user
    assert "Logs of recent crashes" not in user


# -- program.md front-matter ------------------------------------------------------------------

SMALL_TRAIN_PY = "LR = 0.1  # learning rate\n"
PROSE = "# Program\n\nTune the learning rates.\n"
# The user prompt of a program without front-matter.
PROSE_ONLY_PROMPT = (
    "# Research program (program.md)\n\n# Program\n\nTune the learning rates.\n\n"
    "# Training setup\n\n- Imports: the standard library and torch; nothing else is installed.\n\n"
    "# Current best train.py (val_bpb 1.500000)\n\n```python\nLR = 0.1  # learning rate\n```\n\n"
    "# Recent experiments (oldest first)\n\n- #1 keep val_bpb=1.500000: baseline\n\n"
    "# Your task\n\nPropose experiment 2. The best val_bpb to beat is 1.500000. "
    "Start with the HYPOTHESIS line, then the SEARCH/REPLACE blocks.\n"
)


def small_prompt(program: str) -> str:
    history = [ExperimentRecord(1, "baseline", Outcome.KEEP, val_bpb=1.5)]
    ctx = ProposalContext("demo", 2, program, SMALL_TRAIN_PY, 1.5, history=history,
                          packages=("torch",))  # fmt: skip
    return build_messages(ctx)[1]["content"]


def test_a_program_without_front_matter_gives_the_same_prompt_as_before() -> None:
    assert small_prompt(PROSE) == PROSE_ONLY_PROMPT


def test_front_matter_becomes_a_strategy_section_after_the_prose() -> None:
    program = "---\nname: lr\nexplore: ['*_LR']\nstep: 2\nrisk: high\n---\n\n" + PROSE
    user = small_prompt(program)
    assert user.startswith("# Research program (program.md)\n\n# Program\n\nTune the")
    assert "name: lr" not in user and not user.startswith("---")
    assert user.index("Tune the") < user.index("# Strategy (program.md front-matter)")
    strategy = user[user.index("# Strategy (program.md front-matter)") :]
    assert "```yaml\nexplore: ['*_LR']\nstep: 2.0\nrisk: high\n```" in strategy
    assert "- Change only knobs matching *_LR." in strategy
    assert "- Take risks: now and then change one knob more than asked." in strategy
    assert strategy.index("risk: high") < strategy.index("# Current best train.py")


def test_front_matter_with_the_default_strategy_shows_only_the_prose() -> None:
    assert small_prompt("---\nname: plain\n---\n\n" + PROSE) == PROSE_ONLY_PROMPT


def test_a_bad_front_matter_is_shown_as_written_instead_of_failing() -> None:
    program = "---\nstep: -1\n---\n\n" + PROSE
    user = small_prompt(program)
    assert user.startswith("# Research program (program.md)\n\n---\nstep: -1\n---\n\n# Program")
    assert "# Strategy" not in user


# -- what a change must fit, and what the best's run reported ----------------------------------

H100_RUN = TrainResult(
    status="ok", val_bpb=1.0163, num_steps=1104, total_tokens_M=578.8, tokens_per_second=1.52e6,
    peak_vram_mb=41_870, mfu_percent=37.6, num_params_M=50.33,
    claimed=["mfu_percent", "num_steps", "peak_vram_mb", "tokens_per_second", "total_tokens_M"],
)  # fmt: skip


def test_setup_gives_the_time_window_the_device_and_what_may_be_imported(
    train_py: str, program_md: str
) -> None:
    ctx = make_context(
        train_py, program_md, time_budget_seconds=300, startup_seconds=120, export_seconds=20,
        device="1 nvidia.com/gpu, on nodes labelled nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",
        packages=("torch", "numpy"),
    )  # fmt: skip
    user = build_messages(ctx)[1]["content"]
    setup = user[user.index("# Training setup") : user.index("# Current best train.py")]
    assert "120 s of start-up" in setup and "300 s training budget" in setup
    assert "20 s later the harness kills it" in setup
    assert (
        "- Device: 1 nvidia.com/gpu, on nodes labelled nvidia.com/gpu.product=NVIDIA-H100" in setup
    )
    assert "- Imports: the standard library and torch, numpy; nothing else is installed." in setup
    assert user.index("tangerine-gradient") < user.index("# Training setup")


def test_setup_leaves_out_what_the_context_does_not_know(train_py: str, program_md: str) -> None:
    user = build_messages(make_context(train_py, program_md, packages=("torch",)))[1]["content"]
    setup = user[user.index("# Training setup") : user.index("# Current best train.py")]
    assert "Time:" not in setup and "Device:" not in setup
    assert "- Imports: the standard library and torch;" in setup


def test_only_train_py_may_change_and_the_budget_and_memory_must_fit() -> None:
    system = build_messages(make_context("X = 1\n", ""))[0]["content"]
    assert "Only train.py changes" in system
    assert 'the device\'s memory given under "Training setup"' in system


def test_the_best_runs_figures_are_shown_as_train_py_reported_them(
    train_py: str, program_md: str
) -> None:
    user = build_messages(make_context(train_py, program_md, best_result=H100_RUN))[1]["content"]
    best = user[user.index("# Current best train.py") : user.index("```python")]
    assert (
        "Its run, as train.py reported it: 1,104 steps, 579M tokens, 1.52M tokens/s, "
        "peak memory 40.9 GiB, MFU 37.6%. The harness counted 50.3M parameters."
    ) in best


def test_a_cpu_runs_figures_read_in_thousands(train_py: str, program_md: str) -> None:
    cpu_run = TrainResult(status="ok", val_bpb=2.5, num_steps=80, total_tokens_M=0.33,
                          tokens_per_second=12_345.0, claimed=["num_steps"])  # fmt: skip
    user = build_messages(make_context(train_py, program_md, best_result=cpu_run))[1]["content"]
    assert "Its run, as train.py reported it: 80 steps, 330k tokens, 12.3k tokens/s." in user


def test_a_run_that_reported_nothing_adds_no_figures(train_py: str, program_md: str) -> None:
    cpu_run = TrainResult(status="ok", val_bpb=2.5, num_params_M=0.4)
    user = build_messages(make_context(train_py, program_md, best_result=cpu_run))[1]["content"]
    assert "as train.py reported it" not in user and "The harness counted" not in user


def test_the_noise_floor_is_explained_once_it_is_measured(train_py: str, program_md: str) -> None:
    unmeasured = build_messages(make_context(train_py, program_md))[1]["content"]
    measured = build_messages(make_context(train_py, program_md, noise_sigma=0.0021))[1]["content"]
    assert "sigma" not in unmeasured
    assert "varies by sigma 0.0021 between runs" in measured
    assert measured.count("sigma") == 1
    assert "The best val_bpb to beat is 1.234567." in measured


# -- rejected proposals ---------------------------------------------------------------------------


def rejected(n: int, reason: str, attempt: str = "") -> ExperimentRecord:
    return ExperimentRecord(n, "(no valid candidate)", Outcome.CRASH, reason="invalid-proposal",
                            detail=reason, attempt=attempt)  # fmt: skip


def test_rejected_proposals_show_their_reason_and_the_first_lines_sent(
    train_py: str, program_md: str
) -> None:
    history = [
        ExperimentRecord(1, "baseline", Outcome.KEEP, val_bpb=1.234567),
        rejected(2, "SEARCH block 1 matches nothing", "HYPOTHESIS: wider MLP\n<<<<<<< SEARCH"),
        rejected(3, "train.py imports flash_attn, which the trainer image does not have"),
    ]
    user = build_messages(make_context(train_py, program_md, history=history))[1]["content"]
    assert "- #2 rejected before training: SEARCH block 1 matches nothing" in user
    assert "- #3 rejected before training: train.py imports flash_attn" in user
    section = user[user.index("# Recent rejected proposals") : user.index("# Your task")]
    assert "## Experiment 2\n\n```\nHYPOTHESIS: wider MLP\n<<<<<<< SEARCH\n```" in section
    assert "Experiment 3" not in section  # an old journal's record: no attempt kept


def test_only_the_last_rejected_attempts_are_shown_each_in_a_fence_it_cannot_close(
    train_py: str, program_md: str
) -> None:
    history = [rejected(n, f"reason {n}", f"HYPOTHESIS: idea {n}\n```python\nX = {n}") for n in range(1, 6)]  # fmt: skip
    user = build_messages(make_context(train_py, program_md, history=history))[1]["content"]
    section = user[user.index("# Recent rejected proposals") :]
    assert [n for n in range(1, 6) if f"## Experiment {n}\n" in section] == [3, 4, 5]
    assert "````\nHYPOTHESIS: idea 5\n```python\nX = 5\n````" in section


def test_a_crash_log_shows_its_last_lines(train_py: str, program_md: str) -> None:
    tail = "".join(f"step {n} loss 3.0\n" for n in range(100)) + "FAIL: loss is NaN\n"
    user = build_messages(make_context(train_py, program_md, log_tails={3: tail}))[1]["content"]
    log = user[user.index("## Experiment 3") : user.index("# Your task")]
    assert "...\nstep 81 loss 3.0\n" in log and "step 80 loss" not in log
    assert log.rstrip().endswith("FAIL: loss is NaN\n```")


# -- the packages train.py may import -----------------------------------------------------------


def test_a_context_without_packages_is_shown_the_trainer_image_list(
    train_py: str, program_md: str
) -> None:
    user = build_messages(make_context(train_py, program_md))[1]["content"]
    assert f"- Imports: the standard library and {', '.join(trainer_packages())};" in user


# -- docs/proposers.md -----------------------------------------------------------------------------


def test_the_example_in_docs_proposers_md_is_the_prompt_the_code_builds() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import prompt_size

    doc = (ROOT / "docs" / "proposers.md").read_text()
    example = prompt_size.doc_example(prompt_size.realistic_messages())
    assert prompt_size.with_example(doc, example) == doc, "run: make docs"
