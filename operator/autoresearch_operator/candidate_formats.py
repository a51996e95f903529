"""Read the answer out of a model's reply, in the formats models actually write.

The reply's reasoning (`<think>` sections and the like) is cut away first: only the final answer
counts. That answer is, in this order of precedence:

- SEARCH/REPLACE blocks (aider's format), with or without a filename line or fence header;
- a unified diff (`--- a/train.py` / `+++ b/train.py` / `@@` hunks); line numbers in hunk headers
  are ignored, since models rarely get them right: each hunk becomes a search-and-replace edit;
- JSON: `{"edits": [{"search": ..., "replace": ...}]}` or `{"train_py": "..."}`, possibly fenced
  and possibly with a "hypothesis" or "description" key;
- the whole new file in one ```python fence.

No kept library parses diffs as models write them (unidiff, whatthepatch and patch-ng refuse
hunks whose line counts are off, or drop blank context lines that lost their leading space), so
the diff reader here is small and forgiving, as aider's own is. A reply naming any file other
than train.py, in a filename line, a fence header, a diff header or a JSON path, is refused.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from autoresearch_operator.candidate_edits import CandidateError, Edit

TRAIN_PY = "train.py"

SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
DIVIDER = re.compile(r"^\s*={5,9}\s*$")
REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
FENCE = re.compile(r"^\s*(?:`{3,}|~{3,})\s*([^`]*?)\s*$")
FENCE_CLOSE = re.compile(r"^\s*(?:`{3,}|~{3,})\s*$")
PYTHON_TAGS = {"python", "python3", "py"}
_PATH = r"[\w./\\-]*\w\.[A-Za-z]{1,5}"
# `train.py`, **train.py**, ### train.py, File: train.py, path/to/train.py:
_FILENAME_LINE = re.compile(
    rf"^[\s#>*_`]*(?:(?:file(?:name)?|path)\s*:\s*)?[*_`\"']*({_PATH})[*_`\"':]*\s*$",
    re.IGNORECASE,
)
_DIFF_GIT = re.compile(r"^diff --git a/(\S+) b/(\S+)")
_HUNK = re.compile(r"^@@(?:.*@@)?")  # "@@ -12,7 +12,7 @@ def f():" and aider's "@@ ... @@"
# "- Because ...": a markdown bullet; Python is never indented by one space
_BULLET = re.compile(r"^[-+*] \S")
_REASONING_TAGS = "think|thinking|reasoning|thought"
_REASONING_SECTION = re.compile(rf"<({_REASONING_TAGS})>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_REASONING_OPEN = re.compile(rf"<(?:{_REASONING_TAGS})>", re.IGNORECASE)
_REASONING_CLOSE = re.compile(rf"</(?:{_REASONING_TAGS})\s*>", re.IGNORECASE)
# gpt-oss's harmony channels, when a server passes them through as text
_HARMONY_FINAL = "<|channel|>final<|message|>"
_HARMONY_END = re.compile(r"<\|(?:return|end|call)\|>\s*$")
_JSON_DESCRIPTION_KEYS = ("hypothesis", "description", "commit_message", "message", "summary")
_JSON_FILE_KEYS = ("train_py", TRAIN_PY, "new_train_py", "content", "code", "source")
_JSON_SEARCH_KEYS = ("search", "old", "find", "original", "before")
_JSON_REPLACE_KEYS = ("replace", "new", "replacement", "updated", "after")
_JSON_PATH_KEYS = ("file", "path", "filename")


@dataclass(frozen=True)
class Answer:
    """What the reply asks for: edits to train.py, or the whole new file."""

    edits: tuple[Edit, ...] = ()
    whole_file: str | None = None
    description: str | None = None  # from a JSON answer's own key; else read from the prose
    prose: str | None = None  # the reply without a JSON answer, where a description may be


def final_answer(reply_text: str) -> str:
    """The reply without its reasoning; refuses a reply that is reasoning all the way down."""
    text = reply_text.replace("\r\n", "\n")
    if _HARMONY_FINAL in text:
        text = _HARMONY_END.sub("", text.rsplit(_HARMONY_FINAL, 1)[1])
    elif "<|channel|>" in text:
        raise CandidateError(
            "the reply is all reasoning (an analysis channel and no final one), so it holds no answer"
        )
    answer = _REASONING_SECTION.sub("", text)
    closes = list(_REASONING_CLOSE.finditer(answer))
    if closes:  # the opening tag was in the chat template, not in the reply
        answer = answer[closes[-1].end() :]
    opened = _REASONING_OPEN.search(answer)
    if opened:
        answer = answer[: opened.start()]
        if not answer.strip():
            raise CandidateError(
                f"the reply is all reasoning: its {opened.group(0)} section never ends, "
                "so no answer follows it"
            )
    if not answer.strip() and text.strip():
        raise CandidateError(
            "the reply has nothing after its reasoning; the edit must come after the "
            "reasoning section, not inside it"
        )
    return answer


def read_answer(text: str) -> Answer:
    """The edits or whole file in an answer (reasoning already removed)."""
    _refuse_other_files(text)
    for parse in (parse_edits, parse_diff):
        edits = parse(text)
        if edits:
            return Answer(edits=tuple(edits))
    return parse_json_answer(text) or Answer(whole_file=whole_file_fence(text))


def parse_edits(reply_text: str) -> list[Edit]:
    """Every SEARCH/REPLACE block in the reply, in order; fences around them are ignored."""
    lines = reply_text.splitlines()
    edits: list[Edit] = []
    i = 0
    while i < len(lines):
        if not SEARCH.match(lines[i]):
            if REPLACE.match(lines[i]):
                raise CandidateError(
                    "the reply has a >>>>>>> REPLACE line without a matching <<<<<<< SEARCH line"
                )
            i += 1
            continue
        number = len(edits) + 1
        search, i = _section(lines, i + 1, DIVIDER, number, "has no ======= line after SEARCH")
        replace, i = _section(lines, i + 1, REPLACE, number, "is not closed by >>>>>>> REPLACE")
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
        if SEARCH.match(line) or DIVIDER.match(line) or REPLACE.match(line):
            raise CandidateError(f"block {number} {unclosed} (found {line.strip()!r} first)")
        body.append(line)
    raise CandidateError(f"block {number} {unclosed}")


def parse_diff(text: str) -> list[Edit]:
    """Each hunk of a unified diff as an edit: context and '-' lines to find, context and '+'
    lines to put there. Hunk headers' line numbers and counts are not trusted."""
    lines = text.splitlines()
    edits: list[Edit] = []
    in_fence = False
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            in_fence = not in_fence
        elif _HUNK.match(lines[i]):
            body, i = _hunk_body(lines, i + 1, in_fence)
            edit = _hunk_edit(body, len(edits) + 1)
            if edit is not None:
                edits.append(edit)
            continue
        i += 1
    return edits


def _hunk_body(lines: Sequence[str], start: int, in_fence: bool) -> tuple[list[str], int]:
    """A hunk's lines, and the index of the line that ends it (not consumed)."""
    body: list[str] = []
    for i in range(start, len(lines)):
        line = lines[i]
        if (
            FENCE.match(line)
            or _HUNK.match(line)
            or _DIFF_GIT.match(line)
            or _is_file_header(lines, i)
        ):
            return body, i
        if not in_fence and _BULLET.match(line):  # prose after an unfenced diff
            return body, i
        # A blank context line that lost its space; inside a ```diff fence, any unprefixed line
        # is context that lost its prefix.
        if line[:1] in (" ", "+", "-", "\\") or not line or in_fence:
            body.append(line)
        else:
            return body, i
    return body, len(lines)


def _hunk_edit(body: list[str], number: int) -> Edit | None:
    while body and not body[-1].strip():  # blank lines after a hunk separate it from prose
        body.pop()
    body = [line for line in body if not line.startswith("\\")]  # "\ No newline at end of file"
    if not any(line[:1] in ("+", "-") for line in body):
        return None
    bare = any(line[:1] not in ("", " ", "+", "-") for line in body)
    text = [_hunk_text(line, bare) for line in body]
    search = tuple(t for line, t in zip(body, text, strict=True) if line[:1] != "+")
    replace = tuple(t for line, t in zip(body, text, strict=True) if line[:1] != "-")
    if not any(line.strip() for line in search):
        raise CandidateError(
            f"diff hunk {number} only adds lines and has no unchanged lines to place them by; "
            "include a few lines around the change"
        )
    return Edit(search, replace, kind="diff hunk")


def _hunk_text(line: str, bare: bool) -> str:
    """A hunk line without its prefix. In a hunk where some context line lost its space prefix
    (`bare`), an indented context line may be code whose indentation was all kept: its prefix
    is there only if the indentation is one more than a multiple of four."""
    if line[:1] in ("+", "-") or not bare:
        return line[1:]
    indent = len(line) - len(line.lstrip(" "))
    return line[1:] if indent % 4 == 1 else line


def _is_file_header(lines: Sequence[str], i: int) -> bool:
    return i + 1 < len(lines) and lines[i].startswith("--- ") and lines[i + 1].startswith("+++ ")


def parse_json_answer(text: str) -> Answer | None:
    """The first JSON object in the reply that holds edits or a whole train.py."""
    decoder = json.JSONDecoder(strict=False)  # models put raw newlines inside strings
    for opening in re.finditer(r"^[ \t]*\{", text, re.MULTILINE):
        start = opening.end() - 1
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and (answer := _json_answer(value)):
            return dataclasses.replace(answer, prose=text[:start] + text[end:])
    return None


def _json_answer(obj: dict[str, Any]) -> Answer | None:
    description = _first_string(obj, _JSON_DESCRIPTION_KEYS)
    path = _first_string(obj, _JSON_PATH_KEYS)
    edits = obj.get("edits", obj.get("changes"))
    if isinstance(edits, list) and edits:
        return Answer(edits=tuple(_json_edits(edits, path)), description=description)
    files = obj.get("files")
    if isinstance(files, dict):  # {"files": {"train.py": "..."}}
        files = [{"path": name, "content": content} for name, content in files.items()]
    if isinstance(files, list):
        for item in files:
            if isinstance(item, dict):
                _require_train_py(_first_string(item, _JSON_PATH_KEYS), "the JSON answer")
        contents = [_first_string(i, _JSON_FILE_KEYS) for i in files if isinstance(i, dict)]
        whole = next((c for c in contents if c is not None), None)
        return Answer(whole_file=whole, description=description) if whole else None
    whole = _first_string(obj, _JSON_FILE_KEYS)
    if whole is None:
        return None
    _require_train_py(path, "the JSON answer")
    return Answer(whole_file=whole, description=description)


def _json_edits(items: list[Any], path: str | None) -> Iterator[Edit]:
    for number, item in enumerate(items, start=1):
        label = f"JSON edit {number}"
        if not isinstance(item, dict):
            raise CandidateError(f'{label} is not an object with "search" and "replace"')
        _require_train_py(_first_string(item, _JSON_PATH_KEYS) or path, label)
        search = _first_string(item, _JSON_SEARCH_KEYS)
        replace = _first_string(item, _JSON_REPLACE_KEYS)
        if search is None or replace is None:
            raise CandidateError(f'{label} needs both a "search" and a "replace" string')
        yield Edit(_string_lines(search), _string_lines(replace), kind="JSON edit")


def _first_string(obj: dict[str, Any], keys: Sequence[str]) -> str | None:
    return next((obj[k] for k in keys if isinstance(obj.get(k), str)), None)


def _string_lines(text: str) -> tuple[str, ...]:
    text = text.replace("\r\n", "\n")
    return tuple(text[:-1].split("\n") if text.endswith("\n") else text.split("\n"))


def fenced_blocks(lines: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
    """(language tag, body lines) of each ``` fence; an unclosed fence runs to the end."""
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        body: list[str] = []
        i += 1
        while i < len(lines) and not FENCE_CLOSE.match(lines[i]):
            body.append(lines[i])
            i += 1
        yield _fence_language(opening.group(1)), body
        i += 1


def whole_file_fence(text: str) -> str:
    """The longest ```python fence (else the longest untagged one): the whole new train.py."""
    fences = list(fenced_blocks(text.splitlines()))
    python = [body for tag, body in fences if tag in PYTHON_TAGS]
    candidates = python or [body for tag, body in fences if tag == ""]
    if not candidates:
        raise CandidateError(
            "the reply has no SEARCH/REPLACE block and no ```python fence holding the whole train.py"
        )
    longest: list[str] = max(candidates, key=len)
    return "\n".join(longest) + "\n"


def _fence_language(info: str) -> str:
    first = re.split(r"[\s:{]", info.strip(), maxsplit=1)[0].lower()
    return "" if _FILENAME_LINE.match(first) else first


def _refuse_other_files(text: str) -> None:
    """Refuse a reply that names a file other than train.py as one it edits."""
    for path in named_files(text.splitlines()):
        _require_train_py(path, "the reply")


def named_files(lines: Sequence[str]) -> Iterator[str]:
    """Files the reply says it edits: in fence headers, diff headers, and filename lines just
    before a fence or a SEARCH block."""
    for i, line in enumerate(lines):
        if fence := FENCE.match(line):
            yield from (m.group(0) for m in re.finditer(_PATH, fence.group(1)))
        elif git := _DIFF_GIT.match(line):
            yield git.group(2)
        elif _is_file_header(lines, i):  # "--- a/x.py <date>" then "+++ b/x.py <date>"
            old, new = (next(iter(header[4:].split()), "") for header in lines[i : i + 2])
            target = old if new in ("", "/dev/null") else new
            if target:
                yield re.sub(r"^[ab]/", "", target)
        elif (named := _FILENAME_LINE.match(line)) and _precedes_an_edit(lines, i):
            yield named.group(1)


def _precedes_an_edit(lines: Sequence[str], i: int) -> bool:
    following = next((line for line in lines[i + 1 :] if line.strip()), "")
    return bool(FENCE.match(following) or SEARCH.match(following))


def _require_train_py(path: str | None, what: str) -> None:
    if path is None:
        return
    name = PurePosixPath(path.replace("\\", "/")).name
    if name != TRAIN_PY:
        raise CandidateError(
            f"{what} edits {path}, but only train.py may change: prepare.py, the harness and "
            "the trainer image are fixed"
        )


def is_filename_line(line: str) -> bool:
    """Whether the line only names a file (aider's filename line), to keep it out of prose."""
    return bool(_FILENAME_LINE.match(line))
