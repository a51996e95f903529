"""Static checks of a candidate train.py, run before any training time is spent.

Each refuses, with a reason the model can act on, a mistake models make that would otherwise
cost a whole training run or quietly train something else: code elided with a placeholder, a
whole file cut short, a class or function defined twice (the second silently wins), an import
the trainer image cannot satisfy, and code that starts other processes (installers above all).

Only what the candidate adds counts: a finding the current train.py already has is not the
candidate's doing, so a program whose train.py, say, shells out keeps working.

These are checks against honest mistakes, not a sandbox: the harness runs train.py in one.
"""

from __future__ import annotations

import ast
import difflib
import re
import threading
from collections import Counter
from collections.abc import Iterator

from autoresearch_operator.candidate_edits import CandidateError
from autoresearch_operator.trainer_modules import importable_in_trainer, trainer_packages

# CPython 3.11 keeps the AST constructor's recursion depth in state that threads share: a garbage
# collection inside one thread's parse can switch to another thread's parse, and the first then
# fails with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905).
# The operator proposes for hundreds of orgs in as many threads, so every parse and compile of
# a train.py here takes its turn under this lock (the benchmark at 200 orgs hit it).
PARSER = threading.Lock()

# A whole file is cut off when it ends this many lines short of the current file's end, or more.
MIN_MISSING_TAIL = 8

# Lines models write instead of code they did not repeat.
_ELISION = re.compile(
    r"^(?:\.\.\.|…)$"  # a bare ... placeholder
    r"|^#\s*(?:\.\.\.|…)"  # '# ...', '# ... rest unchanged ...'
    r"|^#.*\b(?:rest|remainder|everything else)\b.*"
    r"\b(?:unchanged|same|as before|as[ -]is|omitted|identical)\b"
    r"|^#.*\b(?:same as (?:before|above|the original|original|in the original)"
    r"|existing code|previous code|for brevity|code continues|not shown)\b"
    r"|^#.*\b(?:unchanged|as before|as above)\W*$",  # '# training loop (unchanged)'
    re.IGNORECASE,
)
# Modules whose purpose is starting processes or installing packages. multiprocessing is here
# too: train.py reads its batches from prepare.make_dataloader, whose workers (if any) are
# prepare's and torch's own code; the candidate itself has no process to start.
_SPAWNING_MODULES = frozenset(
    {"subprocess", "pty", "pip", "ensurepip", "multiprocessing", "torch.multiprocessing"}
)
_SPAWNING_NAMES = re.compile(
    r"^(?:os\.(?:system|popen|fork|forkpty|exec\w*|spawn\w*|posix_spawnp?|startfile)"
    r"|asyncio\.create_subprocess_\w+|concurrent\.futures\.ProcessPoolExecutor)$"
)


def check_elisions(source: str, current_source: str | None) -> None:
    """Refuse placeholder lines (`# ... rest unchanged ...`, a bare `...`) the candidate adds."""
    existing = {line.strip() for line in (current_source or "").splitlines()}
    for number, line in enumerate(source.splitlines(), start=1):
        text = line.strip()
        if text not in existing and _ELISION.match(text):
            raise CandidateError(
                f"the candidate train.py elides code at line {number} ({text[:60]!r}); "
                "send SEARCH/REPLACE blocks for just the lines that change, or the complete file"
            )


def check_whole_file(source: str, current_source: str) -> None:
    """Refuse a whole new train.py that stops short of the current file's end."""
    new = source.rstrip().splitlines()
    old = current_source.rstrip().splitlines()
    if not new or not old:
        return
    if _ends_mid_statement(source, len(new)):
        raise CandidateError(
            f"the whole train.py in the reply ends mid-statement at line {len(new)} "
            f"({new[-1].strip()[:60]!r}): it looks cut off; send SEARCH/REPLACE blocks instead"
        )
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    tag, i1, i2, j1, j2 = matcher.get_opcodes()[-1]
    missing = (i2 - i1) - (j2 - j1)
    if tag in ("delete", "replace") and j2 - j1 <= 2 and missing >= MIN_MISSING_TAIL:
        raise CandidateError(
            f"the whole train.py in the reply stops at line {len(new)} "
            f"({new[-1].strip()[:60]!r}), {missing} lines short of the current file's end: "
            "it looks cut off; send SEARCH/REPLACE blocks instead of the whole file"
        )


def _ends_mid_statement(source: str, last_line: int) -> bool:
    try:
        with PARSER:
            compile(source, "train.py", "exec")
    except SyntaxError as error:
        unfinished = "never closed" in error.msg or "unexpected EOF" in error.msg
        return unfinished or (error.lineno or 0) >= last_line
    except ValueError:
        return False
    return False


def check_definitions(tree: ast.Module, current: ast.Module | None) -> None:
    """Refuse a class or function defined twice at the top level or in one class body."""
    before = set(_duplicates(current)) if current is not None else set()
    for (scope, name), lines in _duplicates(tree).items():
        if (scope, name) not in before:
            where = f"class {scope}" if scope else "train.py"
            raise CandidateError(
                f"the candidate defines {name} twice in {where} (lines "
                f"{', '.join(map(str, lines))}); the last one silently wins, so keep one"
            )


def _duplicates(tree: ast.Module) -> dict[tuple[str, str], list[int]]:
    scopes: list[tuple[str, list[ast.stmt]]] = [("", tree.body)]
    scopes += [(n.name, n.body) for n in tree.body if isinstance(n, ast.ClassDef)]
    found: dict[tuple[str, str], list[int]] = {}
    for scope, body in scopes:
        defs = [
            n
            for n in body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and not n.decorator_list  # @x.setter, @overload and @f.register redefine on purpose
        ]
        counts = Counter(n.name for n in defs)
        for name, count in counts.items():
            if count > 1:
                found[(scope, name)] = [n.lineno for n in defs if n.name == name]
    return found


def check_imports(tree: ast.Module, current: ast.Module | None) -> None:
    """Refuse an import the trainer image cannot satisfy (relative ones included)."""
    before = {name for name, _ in _imports(current)} if current is not None else set()
    for name, line in _imports(tree):
        if name in before:
            continue
        if name.startswith("."):
            raise CandidateError(
                f"the candidate has a relative import at line {line}; train.py is a single file "
                "and may import only the standard library, prepare and the image's packages"
            )
        if not importable_in_trainer(name):
            shown = ", ".join(p for p in trainer_packages() if p in _HEADLINE_PACKAGES)
            raise CandidateError(
                f"the candidate imports {name} (line {line}), which the trainer image does not "
                f"have; train.py may import the standard library, prepare and the image's "
                f"packages ({shown} and their dependencies), and cannot install more"
            )


_HEADLINE_PACKAGES = {"torch", "triton", "numpy", "tokenizers", "safetensors", "pyarrow"}


def _imports(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """(top-level module, line) of every import, `__import__("x")` and
    `importlib.import_module("x")` included; a relative import's module starts with a dot."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield "." * node.level + (node.module or ""), node.lineno
            elif node.module:
                yield node.module.split(".")[0], node.lineno
        elif isinstance(node, ast.Call) and (module := _dynamic_import(node)):
            yield module.split(".")[0], node.lineno


def _dynamic_import(call: ast.Call) -> str | None:
    name = _dotted(call.func)
    if name not in ("__import__", "import_module", "importlib.import_module") or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def check_processes(tree: ast.Module, current: ast.Module | None) -> None:
    """Refuse code that starts processes: installers, shells, other programs."""
    before = {name for name, _ in _spawns(current)} if current is not None else set()
    for name, line in _spawns(tree):
        if name not in before:
            raise CandidateError(
                f"the candidate starts other processes ({name} at line {line}); train.py must "
                "not run installers or other programs: it may use only what the image has"
            )


def _spawns(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """(what, line) for each use of a process-starting module, function or class."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _spawning_module(alias.name):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _spawning_module(node.module) or _SPAWNING_NAMES.match(full):
                    yield full, node.lineno
        elif isinstance(node, ast.Attribute) and _SPAWNING_NAMES.match(_dotted(node) or ""):
            yield _dotted(node) or "", node.lineno
        elif (
            isinstance(node, ast.Call)
            and (module := _dynamic_import(node))
            and _spawning_module(module)
        ):
            yield module, node.lineno


def _spawning_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in _SPAWNING_MODULES)


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])
