"""parse_reply and validate_candidate: what a model's reply turns into, and what is refused."""

from __future__ import annotations

import sys

import pytest

from autoresearch_operator.candidate import (
    MAX_DESCRIPTION_CHARS,
    NO_DESCRIPTION,
    CandidateError,
    extract_description,
    parse_reply,
    validate_candidate,
)


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE"


def test_single_search_replace_block_changes_only_that_line(train_py: str) -> None:
    reply = "HYPOTHESIS: a higher Muon LR converges faster.\n\n" + block(
        "MATRIX_LR = 0.04  # learning rate for matrix parameters (Muon)",
        "MATRIX_LR = 0.06  # learning rate for matrix parameters (Muon)",
    )
    description, new = parse_reply(reply, train_py)
    assert description == "a higher Muon LR converges faster."
    assert new == train_py.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.06")


def test_several_fenced_blocks_apply_in_order(train_py: str) -> None:
    reply = (
        "**Hypothesis:** deeper and a slower warmdown.\n\n```python\n"
        + block(
            "DEPTH = 8  # number of transformer layers",
            "DEPTH = 10  # number of transformer layers",
        )
        + "\n```\n\nand\n\n```\n"
        + block(
            "WARMDOWN_RATIO = 0.5  # fraction of the budget spent warming down",
            "WARMDOWN_RATIO = 0.3  # fraction of the budget spent warming down",
        )
        + "\n```\n"
    )
    description, new = parse_reply(reply, train_py)
    assert description == "deeper and a slower warmdown."
    assert "DEPTH = 10  #" in new and "WARMDOWN_RATIO = 0.3  #" in new
    assert "DEPTH = 8 " not in new and "WARMDOWN_RATIO = 0.5" not in new
    validate_candidate(new, train_py)


def test_later_block_sees_the_result_of_an_earlier_one(train_py: str) -> None:
    reply = (
        block("DEPTH = 8  # number of transformer layers", "DEPTH = 12  # layers")
        + "\n"
        + block("DEPTH = 12  # layers", "DEPTH = 12  # layers, up from 8")
    )
    _, new = parse_reply(reply, train_py)
    assert "DEPTH = 12  # layers, up from 8\n" in new


def test_multiline_block_replaces_a_function_body(train_py: str) -> None:
    reply = "Use GELU.\n" + block(
        "        x = self.fc(x)\n        x = F.relu(x).square()",
        "        x = self.fc(x)\n        x = F.gelu(x)",
    )
    description, new = parse_reply(reply, train_py)
    assert description == "Use GELU."
    assert "F.gelu(x)" in new and "F.relu" not in new


def test_trailing_spaces_in_search_are_tolerated(train_py: str) -> None:
    reply = block(
        "DEPTH = 8  # number of transformer layers   ", "DEPTH = 6  # number of transformer layers"
    )
    _, new = parse_reply(reply, train_py)
    assert "DEPTH = 6  #" in new


def test_a_dedented_search_lands_at_its_real_depth_with_its_replace_reindented(
    train_py: str,
) -> None:
    reply = block("x = self.fc(x)\nx = F.relu(x).square()", "x = self.fc(x)\nx = F.gelu(x)")
    _, new = parse_reply(reply, train_py)
    assert new == train_py.replace("        x = F.relu(x).square()", "        x = F.gelu(x)")


def test_a_search_that_only_matches_loosely_in_two_places_is_ambiguous(train_py: str) -> None:
    reply = block("super().__init__()", "super().__init__()  # hi")
    with pytest.raises(CandidateError, match=r"block 1 matches 2 places.*super"):
        parse_reply(reply, train_py)


def test_a_search_whose_words_differ_matches_nothing(train_py: str) -> None:
    reply = block("x = self.fc(y)", "x = self.fc(x) * 2")
    with pytest.raises(CandidateError, match=r"block 1 matches nothing.*x = self\.fc\(y\)"):
        parse_reply(reply, train_py)


def test_search_that_matches_nothing_names_the_block_and_snippet(train_py: str) -> None:
    reply = block("DEPTH = 8  # layers", "DEPTH = 9  # layers")
    reply = (
        block("MATRIX_LR = 0.04  # learning rate for matrix parameters (Muon)", "MATRIX_LR = 0.05")
        + "\n"
        + reply
    )
    with pytest.raises(CandidateError) as caught:
        parse_reply(reply, train_py)
    assert "SEARCH block 2 matches nothing" in caught.value.reason
    assert "DEPTH = 8  # layers" in caught.value.reason


def test_ambiguous_search_is_an_error_asking_for_context(train_py: str) -> None:
    reply = block("        super().__init__()", "        super().__init__()  # hi")
    with pytest.raises(CandidateError, match=r"block 1 matches 2 places.*unique"):
        parse_reply(reply, train_py)


def test_empty_search_is_an_error(train_py: str) -> None:
    with pytest.raises(CandidateError, match="block 1 has an empty SEARCH"):
        parse_reply("<<<<<<< SEARCH\n=======\nprint('hi')\n>>>>>>> REPLACE\n", train_py)


def test_unclosed_block_is_an_error(train_py: str) -> None:
    reply = "<<<<<<< SEARCH\nDEPTH = 8  # number of transformer layers\n=======\nDEPTH = 9\n"
    with pytest.raises(CandidateError, match="block 1 is not closed by >>>>>>> REPLACE"):
        parse_reply(reply, train_py)


def test_replace_marker_without_search_marker_is_an_error(train_py: str) -> None:
    reply = "<<<< SEARCH\nDEPTH = 8\n=======\nDEPTH = 9\n>>>>>>> REPLACE\n"
    with pytest.raises(CandidateError, match="without a matching <<<<<<< SEARCH"):
        parse_reply(reply, train_py)


def test_whole_file_in_python_fence_replaces_the_source(train_py: str) -> None:
    new_file = train_py.replace("HEAD_DIM = 128", "HEAD_DIM = 64")
    reply = f"DESCRIPTION: smaller heads, more of them.\n\n```python\n{new_file}```\n\nGood luck!"
    description, new = parse_reply(reply, train_py)
    assert description == "smaller heads, more of them."
    assert new == new_file


def test_snippet_in_python_fence_is_not_taken_for_the_whole_file(train_py: str) -> None:
    reply = "Try this:\n```python\nMATRIX_LR = 0.05\n```\n"
    with pytest.raises(CandidateError, match="1 lines but train.py has"):
        parse_reply(reply, train_py)


def test_prose_only_reply_is_an_error(train_py: str) -> None:
    with pytest.raises(CandidateError, match="no SEARCH/REPLACE block and no ```python fence"):
        parse_reply("I would raise the learning rate a little.", train_py)


def test_description_falls_back_to_first_prose_line_and_is_trimmed() -> None:
    long_line = "## " + "word " * 60
    description = extract_description(f"\n\n{long_line}\n" + block("a", "b"))
    assert description.startswith("word word")
    assert len(description) <= MAX_DESCRIPTION_CHARS and description.endswith("...")


def test_description_ignores_code_and_defaults_when_there_is_no_prose() -> None:
    assert extract_description("```python\nprint(1)\n```\n") == NO_DESCRIPTION
    assert extract_description(block("HYPOTHESIS: not me", "x = 1") + "\nreal one") == "real one"


@pytest.mark.parametrize(
    "reply",
    [
        "## Hypothesis\n\nMore heads help.\n\n## Change\n",
        "1. **Hypothesis**: More heads help.\n2. The edit:\n",
        "**Hypothesis:**\nMore heads help.\n",
    ],
)
def test_description_from_a_hypothesis_heading_or_list_item(reply: str) -> None:
    assert extract_description(reply) == "More heads help."


def test_a_json_answer_without_a_description_key_does_not_become_punctuation(
    train_py: str,
) -> None:
    reply = '{\n  "edits": [{"search": "SEED = 1337", "replace": "SEED = 7"}]\n}\n'
    with pytest.raises(CandidateError, match="JSON edit 1 matches nothing"):
        parse_reply(reply, train_py)  # whole lines only: a fragment of a line is no SEARCH
    reply = reply.replace("SEED = 1337", "SEED = 1337  # fixed so runs are comparable")
    reply = reply.replace("SEED = 7", "SEED = 7  # fixed so runs are comparable")
    assert parse_reply(reply, train_py)[0] == NO_DESCRIPTION


def test_syntax_error_is_reported_with_its_line(train_py: str) -> None:
    reply = block("def main():", "def main(:")
    _, new = parse_reply(reply, train_py)
    line = new.splitlines().index("def main(:") + 1
    with pytest.raises(
        CandidateError, match=rf"does not compile: .* at line {line}: 'def main\(:'"
    ):
        validate_candidate(new, train_py)


def test_validate_refuses_empty_oversized_and_unchanged_sources(train_py: str) -> None:
    with pytest.raises(CandidateError, match="is empty"):
        validate_candidate("  \n", train_py)
    with pytest.raises(CandidateError, match="over the 1000-byte limit"):
        validate_candidate(train_py, max_bytes=1000)
    with pytest.raises(CandidateError, match="identical"):
        validate_candidate(train_py.replace("\n", "  \n"), train_py)
    validate_candidate(train_py.replace("DEPTH = 8", "DEPTH = 9"), train_py)


# -- what models write besides SEARCH/REPLACE blocks ----------------------------------------


def test_a_unified_diff_applies_wherever_its_context_is_whatever_its_line_numbers(
    train_py: str,
) -> None:
    reply = (
        "HYPOTHESIS: deeper.\n\n```diff\n--- a/train.py\n+++ b/train.py\n@@ -200,4 +200,4 @@\n"
        "\n# Model architecture\n-DEPTH = 8  # number of transformer layers\n"
        "+DEPTH = 10  # number of transformer layers\n ASPECT_RATIO = 64  # model_dim = DEPTH * ASPECT_RATIO\n```\n"
    )
    description, new = parse_reply(reply, train_py)
    assert description == "deeper."
    assert new == train_py.replace("DEPTH = 8  #", "DEPTH = 10  #")


def test_an_unfenced_diff_ends_where_the_prose_after_it_starts(train_py: str) -> None:
    reply = (
        "--- a/train.py\n+++ b/train.py\n@@ -1,2 +1,2 @@\n"
        "-SEED = 1337  # fixed so runs are comparable\n+SEED = 7  # fixed so runs are comparable\n"
        "\n- Why: another seed.\n+ Risk: none.\n"
    )
    _, new = parse_reply(reply, train_py)
    assert new == train_py.replace("SEED = 1337", "SEED = 7")


def test_a_diff_hunk_that_only_adds_lines_is_refused_for_want_of_context(train_py: str) -> None:
    reply = "--- a/train.py\n+++ b/train.py\n@@ -3,0 +4,1 @@\n+import os\n"
    with pytest.raises(CandidateError, match="diff hunk 1 only adds lines"):
        parse_reply(reply, train_py)


@pytest.mark.parametrize(
    "reply",
    [
        "--- a/prepare.py\n+++ b/prepare.py\n@@ -1 +1 @@\n-A = 1\n+A = 2\n",
        "diff --git a/harness.py b/harness.py\n@@ -1 +1 @@\n-A = 1\n+A = 2\n",
        "requirements.txt\n```\n<<<<<<< SEARCH\nnumpy\n=======\nnumpy\nflash-attn\n>>>>>>> REPLACE\n```\n",
        '```python title="prepare.py"\n' + "x = 1\n" * 80 + "```\n",
        '{"edits": [{"path": "prepare.py", "search": "A = 1", "replace": "A = 2"}]}',
        '{"file": "../prepare.py", "content": "A = 2"}',
    ],
    ids=["diff", "git-diff", "filename-line", "fence-title", "json-edit", "json-file"],
)
def test_an_edit_to_any_file_but_train_py_is_refused_naming_it(train_py: str, reply: str) -> None:
    with pytest.raises(CandidateError, match=r"edits \S+, but only train.py may change"):
        parse_reply(reply, train_py)


def test_filename_lines_and_fence_headers_naming_train_py_are_accepted(train_py: str) -> None:
    one = block("DEPTH = 8  # number of transformer layers", "DEPTH = 9  # layers")
    for reply in (
        f"train.py\n```python\n{one}\n```",
        f"**`trainer-image/train.py`**\n\n{one}",
        f"```python:train.py\n{one}\n```",
    ):
        _, new = parse_reply(reply, train_py)
        assert "DEPTH = 9  # layers\n" in new


def test_a_json_answer_gives_edits_and_its_own_description(train_py: str) -> None:
    reply = (
        'Here you go:\n```json\n{"description": "smaller heads",\n "edits": [{"search": '
        '"HEAD_DIM = 128  # target head dimension for attention\\n", "replace": '
        '"HEAD_DIM = 64  # target head dimension for attention\\n"}]}\n```\n'
    )
    description, new = parse_reply(reply, train_py)
    assert description == "smaller heads"
    assert new == train_py.replace("HEAD_DIM = 128", "HEAD_DIM = 64")


def test_a_json_answer_with_the_whole_file(train_py: str) -> None:
    import json

    changed = train_py.replace("SEED = 1337", "SEED = 7")
    description, new = parse_reply(
        json.dumps({"hypothesis": "new seed", "train_py": changed}), train_py
    )
    assert (description, new) == ("new seed", changed)


def test_a_json_edit_without_replace_says_what_is_missing(train_py: str) -> None:
    with pytest.raises(CandidateError, match=r"JSON edit 1 needs both"):
        parse_reply('{"edits": [{"search": "DEPTH = 8"}]}', train_py)


# -- whitespace drift: looser matches, never ambiguous ---------------------------------------


def test_a_tab_indented_search_and_replace_land_as_spaces(train_py: str) -> None:
    reply = block(
        "\t\tx = self.fc(x)\n\t\tx = F.relu(x).square()", "\t\tx = self.fc(x)\n\t\tx = F.gelu(x)"
    )
    _, new = parse_reply(reply, train_py)
    assert new == train_py.replace("        x = F.relu(x).square()", "        x = F.gelu(x)")


def test_an_over_indented_block_is_shifted_back_keeping_its_inner_structure(train_py: str) -> None:
    search = "        if progress < WARMUP_RATIO:\n            return progress / WARMUP_RATIO"
    replace = "        if progress < WARMUP_RATIO:  # never divide by zero\n            return progress / max(WARMUP_RATIO, 1e-8)"
    _, new = parse_reply(block(search, replace), train_py)
    assert (
        "    if progress < WARMUP_RATIO:  # never divide by zero\n        return progress / max("
        in new
    )


def test_squashed_spaces_before_a_comment_still_find_the_line(train_py: str) -> None:
    reply = block(
        "SEED = 1337 # fixed so runs are comparable", "SEED = 42 # fixed so runs are comparable"
    )
    _, new = parse_reply(reply, train_py)
    assert "\nSEED = 42 # fixed so runs are comparable\n" in new


def test_blank_lines_at_a_search_edge_that_the_file_lacks_are_ignored(train_py: str) -> None:
    reply = block(
        "\nDEPTH = 8  # number of transformer layers\n",
        "\nDEPTH = 9  # number of transformer layers\n",
    )
    _, new = parse_reply(reply, train_py)
    assert new == train_py.replace("DEPTH = 8  #", "DEPTH = 9  #")


def test_a_search_whose_lines_drift_by_different_amounts_matches_nothing(train_py: str) -> None:
    reply = block(
        "def forward(self, x):\n  x = self.fc(x)", "def forward(self, x):\n  x = self.fc(x) * 2"
    )
    with pytest.raises(CandidateError, match="matches nothing"):
        parse_reply(reply, train_py)


# -- reasoning is never the answer -----------------------------------------------------------


def test_an_edit_and_hypothesis_inside_think_are_ignored(train_py: str) -> None:
    decoy = block(
        "DEPTH = 8  # number of transformer layers", "DEPTH = 99  # number of transformer layers"
    )
    real = block(
        "SEED = 1337  # fixed so runs are comparable", "SEED = 1  # fixed so runs are comparable"
    )
    reply = f"<think>\nHYPOTHESIS: decoy\n{decoy}\n</think>\n\nHYPOTHESIS: real one\n\n{real}"
    description, new = parse_reply(reply, train_py)
    assert description == "real one"
    assert "SEED = 1  #" in new and "DEPTH = 8  #" in new


@pytest.mark.parametrize("tag", ["think", "thinking", "reasoning"])
def test_an_answer_after_a_closing_tag_alone_counts_from_there(train_py: str, tag: str) -> None:
    decoy = block("DEPTH = 8  # number of transformer layers", "DEPTH = 99  # layers")
    real = block("DEPTH = 8  # number of transformer layers", "DEPTH = 7  # layers")
    description, new = parse_reply(
        f"I should {decoy}\n</{tag}>\nHYPOTHESIS: seven\n{real}", train_py
    )
    assert (description, "DEPTH = 7  # layers" in new) == ("seven", True)


def test_an_edit_only_inside_the_reasoning_is_no_answer(train_py: str) -> None:
    edit = block("DEPTH = 8  # number of transformer layers", "DEPTH = 9  # layers")
    with pytest.raises(CandidateError, match="nothing after its reasoning"):
        parse_reply(f"<think>\nHYPOTHESIS: deeper\n{edit}\n</think>\n", train_py)


def test_a_think_section_that_never_ends_leaves_no_answer(train_py: str) -> None:
    reply = (
        "<think>\n"
        + block("DEPTH = 8  # number of transformer layers", "DEPTH = 9")
        + "\nbut maybe"
    )
    with pytest.raises(CandidateError, match=r"all reasoning: its <think> section never ends"):
        parse_reply(reply, train_py)


# -- what the candidate adds is checked before it trains -------------------------------------


@pytest.mark.parametrize(
    "placeholder",
    [
        "# ... rest unchanged ...",
        "# (same as before)",
        "...",
        "# rest of the file stays as is",
        "# …",
    ],
)
def test_elided_code_is_refused(train_py: str, placeholder: str) -> None:
    reply = block(
        "class Block(nn.Module):", f"class Block(nn.Module):\n    {placeholder}\n\n\nclass Other:"
    )
    _, new = parse_reply(reply, train_py)
    with pytest.raises(CandidateError, match="elides code at line"):
        validate_candidate(new, train_py)


def test_a_whole_file_cut_short_is_refused(train_py: str) -> None:
    lines = train_py.replace("SEED = 1337", "SEED = 1").splitlines()
    short = "\n".join(lines[: lines.index("def lr_multiplier(progress):")])
    with pytest.raises(
        CandidateError, match=r"lines short of the current file's end: it looks cut off"
    ):
        parse_reply(f"HYPOTHESIS: x\n```python\n{short}\n```\n", train_py)


def test_a_whole_file_ending_mid_statement_is_refused(train_py: str) -> None:
    cut = (
        train_py.replace("SEED = 1337", "SEED = 1")[: train_py.index('    print(f"num_params_M')]
        + '    print(f"num'
    )
    with pytest.raises(CandidateError, match="ends mid-statement"):
        parse_reply(f"```python\n{cut}\n```\n", train_py)


def test_a_second_definition_is_refused_but_a_property_setter_is_not(train_py: str) -> None:
    twice = train_py + "\n\ndef lr_multiplier(progress):\n    return 1.0\n"
    with pytest.raises(
        CandidateError, match=r"defines lr_multiplier twice in train.py \(lines \d+, \d+\)"
    ):
        validate_candidate(twice, train_py)
    method = train_py.replace(
        "class MLP(nn.Module):\n",
        "class MLP(nn.Module):\n    def forward(self, x):\n        return x\n\n",
    )
    with pytest.raises(CandidateError, match="defines forward twice in class MLP"):
        validate_candidate(method, train_py)
    setter = train_py + (
        "\n\nclass Knob:\n    @property\n    def v(self):\n        return 1\n\n"
        "    @v.setter\n    def v(self, value):\n        pass\n"
    )
    validate_candidate(setter, train_py)


@pytest.mark.parametrize(
    ("code", "module"),
    [
        ("import flash_attn", "flash_attn"),
        ("from transformers import AutoModel", "transformers"),
        ("import apex.optimizers as ao", "apex"),
        ("F = __import__('xformers').ops", "xformers"),
        (
            "import importlib\nm = importlib.import_module('liger_kernel.transformers')",
            "liger_kernel",
        ),
    ],
)
def test_an_import_the_trainer_image_lacks_is_refused(
    train_py: str, code: str, module: str
) -> None:
    with pytest.raises(
        CandidateError,
        match=rf"imports {module} \(line \d+\), which the trainer image does not have",
    ):
        validate_candidate(train_py.replace("import math\n", f"import math\n{code}\n"), train_py)


def test_imports_the_image_has_pass(train_py: str) -> None:
    code = "import os\nimport numpy as np\nimport triton\nfrom torch.nn.attention import sdpa_kernel\nfrom prepare import MAX_SEQ_LEN\n"
    validate_candidate(train_py.replace("import math\n", f"import math\n{code}"), train_py)


def test_a_relative_import_is_refused(train_py: str) -> None:
    with pytest.raises(CandidateError, match="relative import at line 5"):
        validate_candidate(
            train_py.replace("import time\n", "import time\nfrom . import helpers\n"), train_py
        )


@pytest.mark.parametrize(
    ("code", "what"),
    [
        ("import subprocess\nsubprocess.run(['pip', 'install', 'x'])", "subprocess"),
        ("import os\nos.system('pip install x')", "os.system"),
        ("from os import popen", "os.popen"),
        ("import os\nos.execv('/bin/sh', ['sh'])", "os.execv"),
        ("import multiprocessing as mp", "multiprocessing"),
        ("import torch.multiprocessing", "torch.multiprocessing"),
        (
            "from concurrent.futures import ProcessPoolExecutor",
            "concurrent.futures.ProcessPoolExecutor",
        ),
        ("import pip", "pip"),
        ("sp = __import__('subprocess')", "subprocess"),
    ],
)
def test_code_that_starts_processes_is_refused(train_py: str, code: str, what: str) -> None:
    with pytest.raises(CandidateError, match=rf"starts other processes \({what} at line \d+\)"):
        validate_candidate(train_py.replace("import math\n", f"import math\n{code}\n"), train_py)


def test_only_what_the_candidate_adds_is_checked(train_py: str) -> None:
    current = train_py.replace(
        "import math\n", "import math\nimport os\nimport flash_attn\nos.system('true')\n"
    )
    validate_candidate(current.replace("DEPTH = 8", "DEPTH = 9"), current)


def test_the_real_baseline_passes_every_check_on_its_own() -> None:
    from autoresearch_operator.executor import baseline_train_py

    baseline = baseline_train_py()
    validate_candidate(baseline)  # with no current file, every line counts as added
    validate_candidate(baseline.replace("DEPTH = 8  #", "DEPTH = 9  #"), baseline)


# -- the trainer image's module list ---------------------------------------------------------


def _list_modules():
    from autoresearch_operator.executor import TRAINER_DIR

    sys.path.insert(0, str(TRAINER_DIR))
    try:
        import list_modules
    finally:
        sys.path.remove(str(TRAINER_DIR))
    return list_modules, TRAINER_DIR


def test_the_packaged_module_list_covers_every_package_the_trainer_image_installs() -> None:
    """A package added to requirements.txt without regenerating trainer_modules.txt fails here."""
    import importlib.metadata

    from autoresearch_operator.trainer_modules import trainer_packages

    list_modules, trainer_dir = _list_modules()
    names = list_modules.requirement_names(
        (trainer_dir / "requirements.txt").read_text().splitlines()
    )
    provided: dict[str, set[str]] = {}
    for module, owners in importlib.metadata.packages_distributions().items():
        for owner in owners:
            provided.setdefault(list_modules.normalize_name(owner), set()).add(module)
    assert len(names) >= 4
    for name in names:
        modules = provided.get(list_modules.normalize_name(name)) or {
            name.lower().replace("-", "_")
        }
        assert modules & set(trainer_packages()), (
            f"{name}: regenerate trainer_modules.txt as trainer-image/list_modules.py says"
        )
    assert {"torch", "triton", "numpy"} <= set(trainer_packages())
    assert not set(trainer_packages()) & set(sys.stdlib_module_names)


def test_the_build_time_check_fails_on_a_listed_module_that_is_not_installed(
    tmp_path, capsys
) -> None:
    list_modules, _ = _list_modules()
    listed = tmp_path / "modules.txt"
    listed.write_text("torch\nnumpy\n")
    assert list_modules.main(["--check", str(listed)]) == 0
    listed.write_text("torch\nflash_attn\n")
    assert list_modules.main(["--check", str(listed)]) == 1
    assert "not importable here: flash_attn" in capsys.readouterr().err
