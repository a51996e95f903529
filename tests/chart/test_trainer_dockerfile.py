"""trainer-image/Dockerfile and `make image`, read statically (no container engine runs here):
the images build from the contexts the Makefile passes and match what the operator expects."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from autoresearch_operator.k8s.builders import APP_DIR, HARNESS, PREPARE, TRAINER_UID

ROOT = Path(__file__).resolve().parents[2]
TRAINER = ROOT / "trainer-image"
CHART = ROOT / "charts" / "autoresearch-operator"
MAKE = shutil.which("make")


def instructions(dockerfile: Path, name: str) -> list[str]:
    joined = dockerfile.read_text().replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", joined, re.MULTILINE)]


def copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for copy in instructions(dockerfile, "COPY"):
        words = [w for w in shlex.split(copy) if not w.startswith("--")]
        sources += words[:-1]
    return sources


def torch_pin() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'"torch==([^"]+)"', text).group(1)


def requirement_pins() -> dict[str, str]:
    lines = (TRAINER / "requirements.txt").read_text().splitlines()
    reqs = [line.split("#")[0].strip() for line in lines]
    return dict(
        req.lower().split("==", 1) if "==" in req else (req.lower(), "") for req in reqs if req
    )


def make_image(env: dict[str, str] | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MAKE or "make", "--no-print-directory", "image", *args],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


# -- the trainer Dockerfile -----------------------------------------------------------------


def test_base_image_is_pytorch_pinned_to_the_torch_the_tests_ran_with():
    (arg,) = [a for a in instructions(TRAINER / "Dockerfile", "ARG") if a.startswith("BASE_IMAGE=")]
    version = re.escape(torch_pin())
    assert re.fullmatch(
        rf"BASE_IMAGE=pytorch/pytorch:{version}-cuda[\d.]+-cudnn\d+-runtime", arg
    ), arg
    assert instructions(TRAINER / "Dockerfile", "FROM") == ["${BASE_IMAGE}"]


def test_runs_as_the_high_uid_user_the_operators_jobs_use():
    (user,) = instructions(TRAINER / "Dockerfile", "USER")
    assert user == f"{TRAINER_UID}:{TRAINER_UID}" == "10100:10100"
    assert TRAINER_UID >= 10000  # no user of the host or of the base image (Ubuntu's is 1000)
    run = " ".join(instructions(TRAINER / "Dockerfile", "RUN"))
    assert f"groupadd --gid {TRAINER_UID} " in run and f"useradd --uid {TRAINER_UID} " in run


def test_every_trainer_script_is_in_the_app_dir_the_jobs_run_from():
    copied = [c.split() for c in instructions(TRAINER / "Dockerfile", "COPY")]
    in_app = {
        Path(src).name
        for *sources, dest in copied
        if dest.rstrip("/") == APP_DIR
        for src in sources
    }
    scripts = {p.name for p in TRAINER.glob("*.py")}
    assert {"harness.py", "sandbox.py", "prepare.py", "train.py", HARNESS, PREPARE} <= scripts
    assert scripts <= in_app, f"not copied to {APP_DIR}: {scripts - in_app}"
    assert instructions(TRAINER / "Dockerfile", "ENTRYPOINT") == [
        f'["python", "{APP_DIR}/{HARNESS}"]'
    ]


def test_every_third_party_module_the_trainer_imports_is_in_the_image_and_pinned():
    local = {p.stem for p in TRAINER.glob("*.py")}
    imported = set()
    for path in TRAINER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # lazy imports too (pyarrow, tokenizers)
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - local - {"__future__"}
    assert "torch" in third_party, "found no torch import: the scan is broken"
    needed = third_party - {"torch"}  # torch comes with the base image
    pins = requirement_pins()
    assert needed <= set(pins), f"not in requirements.txt: {needed - set(pins)}"
    assert all(pins.values()), (
        f"unpinned: {[name for name, version in pins.items() if not version]}"
    )


def test_no_credentials_are_baked_into_either_image():
    secret = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
    for dockerfile in (TRAINER / "Dockerfile", ROOT / "operator" / "Dockerfile"):
        for kind in ("ARG", "ENV"):
            names = re.findall(
                r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", " ".join(instructions(dockerfile, kind))
            )
            assert not [n for n in names if secret.search(n)], f"{dockerfile}: {kind} {names}"
        for source in copy_sources(dockerfile):
            assert not re.search(r"(^|/)\.env|\.pem$|id_rsa|\.kube|secret", source), source


# -- make image ------------------------------------------------------------------------------


def builds(stdout: str) -> list[dict[str, str]]:
    """Each `<engine> build -f F -t T CONTEXT` line that `make -n image` prints."""
    out = []
    for line in stdout.splitlines():
        words = shlex.split(line)
        if len(words) > 1 and words[1] == "build":
            out.append({"engine": words[0], "file": words[words.index("-f") + 1],
                        "tag": words[words.index("-t") + 1], "context": words[-1]})  # fmt: skip
    return out


def test_make_image_builds_both_images_from_contexts_holding_what_they_copy():
    result = make_image(None, "-n", "DOCKER=docker")
    assert result.returncode == 0, result.stderr
    planned = builds(result.stdout)
    assert [Path(b["file"]).parent.name for b in planned] == ["operator", "trainer-image"]
    for build in planned:
        dockerfile, context = ROOT / build["file"], ROOT / build["context"]
        assert dockerfile.is_file() and context.is_dir(), build
        missing = [s for s in copy_sources(dockerfile) if not (context / s).exists()]
        assert missing == [], f"{build['file']} copies what its context {build['context']} lacks"


def test_make_image_tags_are_the_ones_the_chart_deploys():
    result = make_image(None, "-n", "DOCKER=docker")
    values = yaml.safe_load((CHART / "values.yaml").read_text())["images"]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    tags = [b["tag"] for b in builds(result.stdout)]
    assert tags == [
        f"{values[name]['repository']}:{app_version}" for name in ("operator", "trainer")
    ]
    assert all(values[name]["tag"] == app_version for name in ("operator", "trainer"))


def _path_with(tmp_path: Path, *tools: str) -> dict[str, str]:
    """A PATH holding only what the Makefile's recipes need, plus fake container engines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for real in ("sed", "bash", "test"):
        if found := shutil.which(real):
            (bin_dir / real).symlink_to(found)
    for tool in tools:
        (bin_dir / tool).write_text("#!/bin/sh\necho fake\n")
        (bin_dir / tool).chmod(0o755)
    return {**os.environ, "PATH": str(bin_dir)}


def test_make_image_falls_back_to_podman_when_docker_is_missing(tmp_path):
    result = make_image(_path_with(tmp_path, "podman"), "-n")
    assert result.returncode == 0, result.stderr
    assert [b["engine"] for b in builds(result.stdout)] == ["podman", "podman"]


def test_make_image_without_an_engine_fails_with_one_clear_line(tmp_path):
    result = make_image(_path_with(tmp_path))
    assert result.returncode != 0
    assert "neither docker nor podman is installed" in result.stderr
    assert "build" not in result.stdout
