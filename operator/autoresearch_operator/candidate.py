"""Turn a proposer's reply into a candidate train.py, and check it before any training time is spent.

Pure functions over strings. A reply either carries SEARCH/REPLACE blocks (aider's format)

    <<<<<<< SEARCH
    old lines
    =======
    new lines
    >>>>>>> REPLACE

applied in order to the current train.py, or the whole new file in one ```python fence.
Anything wrong raises CandidateError with a one-sentence reason the model can act on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

MAX_CANDIDATE_BYTES = 100_000
MAX_DESCRIPTION_CHARS = 120
NO_DESCRIPTION = "(no hypothesis given)"
# A ```python fence shorter than this fraction of the current file is a snippet, not a whole file.
MIN_WHOLE_FILE_FRACTION = 0.4

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
_FENCE = re.compile(r"^\s*```+\s*([\w+-]*)\s*$")
_FENCE_CLOSE = re.compile(r"^\s*```+\s*$")
_PYTHON_TAGS = {"python", "python3", "py"}
_HYPOTHESIS = re.compile(
    r"^[\s>*#_-]*(?:HYPOTHESIS|DESCRIPTION)[*_\s]*:[*_\s]*(.+)$", re.IGNORECASE
)


class CandidateError(ValueError):
    """The reply or the candidate it yields is unusable; `reason` says why in one sentence."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Edit:
    """One SEARCH/REPLACE block, as lines without their newlines."""

    search: tuple[str, ...]
    replace: tuple[str, ...]


def parse_reply(reply_text: str, current_source: str) -> tuple[str, str]:
    """Return (description, new_source) from a model reply against the current train.py."""
    text = reply_text.replace("\r\n", "\n")
    edits = parse_edits(text)
    new_source = apply_edits(current_source, edits) if edits else _whole_file(text, current_source)
    return extract_description(text), new_source


def parse_edits(reply_text: str) -> list[Edit]:
    """Every SEARCH/REPLACE block in the reply, in order; fences around them are ignored."""
    lines = reply_text.splitlines()
    edits: list[Edit] = []
    i = 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            if _REPLACE.match(lines[i]):
                raise CandidateError(
                    "the reply has a >>>>>>> REPLACE line without a matching <<<<<<< SEARCH line"
                )
            i += 1
            continue
        number = len(edits) + 1
        search, i = _section(lines, i + 1, _DIVIDER, number, "has no ======= line after SEARCH")
        replace, i = _section(lines, i + 1, _REPLACE, number, "is not closed by >>>>>>> REPLACE")
        edits.append(Edit(tuple(search), tuple(replace)))
        i += 1
    return edits


def _section(
    lines: Sequence[str], start: int, end: re.Pattern[str], number: int, unclosed: str
) -> tuple[list[str], int]:
    """Lines from `start` up to the line matching `end`; returns them and that line's index."""
    body: list[str] = []
    for i in range(start, len(lines)):
        line = lines[i]
        if end.match(line):
            return body, i
        if _SEARCH.match(line) or _DIVIDER.match(line) or _REPLACE.match(line):
            raise CandidateError(f"block {number} {unclosed} (found {line.strip()!r} first)")
        body.append(line)
    raise CandidateError(f"block {number} {unclosed}")


def apply_edits(source: str, edits: Sequence[Edit]) -> str:
    """Apply the blocks in order; each SEARCH must match exactly one run of whole lines."""
    lines = source.splitlines()
    for number, edit in enumerate(edits, start=1):
        if not any(line.strip() for line in edit.search):
            raise CandidateError(
                f"block {number} has an empty SEARCH section; copy the lines to replace from train.py"
            )
        starts = _find(lines, edit.search, lambda s: s)
        if not starts:  # models often drop or add trailing spaces
            starts = _find(lines, edit.search, str.rstrip)
        snippet = _snippet(edit.search)
        if not starts:
            raise CandidateError(
                f"SEARCH block {number} matches nothing in train.py (starts {snippet!r})"
            )
        if len(starts) > 1:
            raise CandidateError(
                f"SEARCH block {number} matches {len(starts)} places in train.py "
                f"(starts {snippet!r}); add surrounding lines to make it unique"
            )
        start = starts[0]
        lines[start : start + len(edit.search)] = edit.replace
    return "\n".join(lines) + "\n" if lines else ""


def _find(
    lines: Sequence[str], search: Sequence[str], normalize: Callable[[str], str]
) -> list[int]:
    wanted = [normalize(line) for line in search]
    have = [normalize(line) for line in lines]
    n = len(wanted)
    return [i for i in range(len(have) - n + 1) if have[i : i + n] == wanted]


def _snippet(search: Sequence[str], limit: int = 60) -> str:
    first = next((line.strip() for line in search if line.strip()), "")
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _fenced_blocks(lines: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
    """(language tag, body lines) of each ``` fence; an unclosed fence runs to the end."""
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        body: list[str] = []
        i += 1
        while i < len(lines) and not _FENCE_CLOSE.match(lines[i]):
            body.append(lines[i])
            i += 1
        yield opening.group(1).lower(), body
        i += 1


def _whole_file(reply_text: str, current_source: str) -> str:
    fences = list(_fenced_blocks(reply_text.splitlines()))
    python = [body for tag, body in fences if tag in _PYTHON_TAGS]
    candidates = python or [body for tag, body in fences if tag == ""]
    if not candidates:
        raise CandidateError(
            "the reply has no SEARCH/REPLACE block and no ```python fence holding the whole train.py"
        )
    body = max(candidates, key=len)
    current_lines = len(current_source.splitlines())
    if len(body) < MIN_WHOLE_FILE_FRACTION * current_lines:
        raise CandidateError(
            f"the ```python fence has {len(body)} lines but train.py has {current_lines}; "
            "send SEARCH/REPLACE blocks for partial edits, or the whole file"
        )
    return "\n".join(body) + "\n"


def extract_description(reply_text: str) -> str:
    """The HYPOTHESIS:/DESCRIPTION: line, else the first prose line, trimmed to one short line."""
    lines = reply_text.replace("\r\n", "\n").splitlines()
    # Prose first; then fences too, for replies wrapped whole in one.
    for skip_fences in (True, False):
        for line in _lines_outside(lines, skip_fences=skip_fences):
            found = _HYPOTHESIS.match(line)
            if found and found.group(1).strip(" *_"):
                return _trim(found.group(1))
    for line in _lines_outside(lines, skip_fences=True):
        prose = line.strip().lstrip("#>*-_ ").strip()
        if prose:
            return _trim(prose)
    return NO_DESCRIPTION


def _lines_outside(lines: Sequence[str], *, skip_fences: bool) -> Iterator[str]:
    """Lines that are not inside a SEARCH/REPLACE block (nor, if asked, inside a ``` fence)."""
    in_block = in_fence = False
    for line in lines:
        if _SEARCH.match(line):
            in_block = True
        elif _REPLACE.match(line):
            in_block = False
        elif in_block:
            continue
        elif line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not (skip_fences and in_fence):
            yield line


def _trim(text: str) -> str:
    text = " ".join(text.split()).strip(" *_")
    if len(text) <= MAX_DESCRIPTION_CHARS:
        return text
    return text[: MAX_DESCRIPTION_CHARS - 3].rstrip() + "..."


def validate_candidate(
    source: str, current_source: str | None = None, *, max_bytes: int = MAX_CANDIDATE_BYTES
) -> None:
    """Raise CandidateError unless `source` is a plausible new train.py worth training."""
    if not source.strip():
        raise CandidateError("the candidate train.py is empty")
    size = len(source.encode("utf-8"))
    if size > max_bytes:
        raise CandidateError(
            f"the candidate train.py is {size} bytes, over the {max_bytes}-byte limit"
        )
    if current_source is not None and _same_code(source, current_source):
        raise CandidateError("the candidate train.py is identical to the current one")
    try:
        compile(source, "train.py", "exec")
    except SyntaxError as error:
        where = f"line {error.lineno}" if error.lineno else "an unknown line"
        text = (error.text or "").strip()
        shown = f": {text[:80]!r}" if text else ""
        raise CandidateError(
            f"the candidate train.py does not compile: {error.msg} at {where}{shown}"
        ) from error
    except ValueError as error:  # e.g. null bytes
        raise CandidateError(f"the candidate train.py does not compile: {error}") from error


def _same_code(a: str, b: str) -> bool:
    """Equal up to trailing whitespace, which changes nothing worth a training run."""
    return [line.rstrip() for line in a.strip().splitlines()] == [
        line.rstrip() for line in b.strip().splitlines()
    ]
