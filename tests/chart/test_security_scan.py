"""What the operator deploys passes two independent security scanners, checkov and kube-score,
except for the findings scan_allowlist.yaml accepts, each with its reason.

Scanned: the chart as rendered with its defaults and as a production install renders it (images
pinned by digest, watchNamespaces, the ServiceMonitor), and beside each the objects the operator
that chart configures creates at run time (`runtime_jobs`). `make scanners` (a prerequisite of
`make test`) installs both scanners, pinned in hack/scanners.sh.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_render import NAMESPACE, ROOT, objects, render

from autoresearch_operator.k8s import builders
from autoresearch_operator.k8s.config import load_config
from autoresearch_operator.spec import org_from_resource

ALLOWLIST = Path(__file__).with_name("scan_allowlist.yaml")
SCANNERS = ROOT / "hack" / "scanners.sh"
CLUSTER_GO_MOD = ROOT / "hack" / "cluster" / "go.mod"
FAKE_DIGEST = "sha256:" + "0123456789abcdef" * 4

# Each variant: chart values and the API versions the cluster offers.
VARIANTS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "defaults": ({}, []),
    "production": (
        {
            "images": {
                "operator": {"digest": FAKE_DIGEST},
                "trainer": {"digest": FAKE_DIGEST},
            },
            "watchNamespaces": [NAMESPACE, "lab"],
            "persistence": {"data": {"sources": ["https://example.org/corpus.txt"]}},
        },
        ["monitoring.coreos.com/v1"],
    ),
}

# A minimal ResearchOrg: every trainer field comes from the chart's defaults, as for most users.
ORG_BODY = {
    "apiVersion": "autoresearch.dev/v1alpha1",
    "kind": "ResearchOrg",
    "metadata": {"name": "explorer", "namespace": NAMESPACE, "uid": "org-uid"},
    "spec": {"program": "Lower val_bpb."},
}
# The prepare Job runs only when the chart names sources; it is scanned either way.
EXAMPLE_SOURCES = ("https://example.org/corpus.txt",)

# A pod both scanners must object to: proof that their reports are read, not just run.
CANARY = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "canary", "namespace": NAMESPACE},
    "spec": {
        "containers": [
            {"name": "root", "image": "busybox", "securityContext": {"privileged": True}}
        ]
    },
}
CANARY_VARIANT = "canary"


def runtime_jobs(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """What the operator of this Deployment creates in an org's namespace: the deny-all
    NetworkPolicy, an experiment Job with its train.py ConfigMap, and the data-prepare Job, built
    by the operator's own builders from the configuration the chart gives it."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    config = load_config({e["name"]: e["value"] for e in container["env"] if "value" in e})
    org = org_from_resource(ORG_BODY, defaults=config.org_defaults)
    job = builders.experiment_job(org, ORG_BODY, 7, "a" * 40, data_claim=config.data_claim)
    created = {**job, "metadata": {**job["metadata"], "uid": "job-uid"}}  # owns the ConfigMap
    prepare = builders.prepare_job(
        NAMESPACE,
        image=config.trainer_image,
        data_claim=config.data_claim,
        sources=config.data_sources or EXAMPLE_SOURCES,
        vocab_size=config.data_vocab_size,
        resources=config.prepare_resources,
    )
    policy = [builders.network_policy(NAMESPACE)] if config.network_policy else []
    return [*policy, job, builders.candidate_configmap(created, "print('candidate')\n"), prepare]


def deployed(variant: str) -> list[dict[str, Any]]:
    values, api_versions = VARIANTS[variant]
    chart = objects(render(values, api_versions=api_versions))
    (deployment,) = (o for o in chart if o["kind"] == "Deployment")
    return chart + runtime_jobs(deployment)


# ---------------------------------------------------------------------------------------------
# Running the scanners


@dataclass(frozen=True)
class Finding:
    variant: str
    checker: str
    check: str
    object: str  # Kind/name
    container: str  # "" when the finding is about the whole object
    message: str

    def __str__(self) -> str:
        where = f"{self.object} [{self.container}]" if self.container else self.object
        return f"{self.variant}: {where}: {self.checker} {self.check}: {self.message}"


Written = dict[Path, tuple[str, dict[str, Any]]]  # manifest file -> (variant, object)


def object_name(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    return spec if obj["kind"] == "Pod" else (spec.get("template") or {}).get("spec") or {}


def scanner_paths() -> dict[str, Path]:
    out = subprocess.run([SCANNERS, "paths"], capture_output=True, text=True, check=True).stdout
    return {name: Path(path) for name, path in (line.split("=", 1) for line in out.splitlines())}


def write_manifests(root: Path) -> Written:
    """One YAML file per object under root/<variant>/."""
    written: Written = {}
    batches = {variant: deployed(variant) for variant in VARIANTS} | {CANARY_VARIANT: [CANARY]}
    for variant, batch in batches.items():
        (root / variant).mkdir()
        for i, obj in enumerate(batch):
            path = root / variant / f"{i:02d}-{obj['kind']}-{obj['metadata']['name']}.yaml"
            # through JSON: no YAML anchors where the builders share a dict (labels)
            path.write_text(yaml.safe_dump(json.loads(json.dumps(obj)), sort_keys=False))
            written[path.resolve()] = (variant, obj)
    return written


def json_report(name: str, argv: list[Any], timeout: float) -> Any:
    """A scanner's JSON report; its exit code says only whether it found something."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{name} exited {proc.returncode} without a JSON report:\n{proc.stderr}")


def checkov(binary: Path, root: Path, written: Written) -> Iterator[Finding]:
    """checkov's failed checks; it exits 1 when there are any, so its JSON decides."""
    report = json_report(
        "checkov",
        [binary, "-d", root, "--framework", "kubernetes", "--output", "json", "--quiet",
         "--compact", "--skip-download"],  # --skip-download: no calls to Prisma Cloud
        timeout=300,
    )  # fmt: skip
    if isinstance(report, list):  # one report per framework when several ran
        (report,) = (r for r in report if r.get("check_type") == "kubernetes")
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, summary
    assert summary["resource_count"] >= len(written), f"checkov missed objects: {summary}"
    for failed in report["results"].get("failed_checks", []):
        variant, obj = written[Path(failed["file_abs_path"]).resolve()]
        container = ""
        for key in failed["check_result"].get("evaluated_keys") or []:
            if m := re.search(r"\b(initContainers|containers)/\[(\d+)\]", key):
                container = pod_spec(obj)[m[1]][int(m[2])]["name"]
                break
        yield Finding(
            variant, "checkov", failed["check_id"], object_name(obj), container,
            failed["check_name"],
        )  # fmt: skip


def kubernetes_version() -> str:
    """The test cluster's minor version: kube-score judges deprecated APIs against it."""
    m = re.search(r"k8s\.io/kubernetes v(\d+\.\d+)", CLUSTER_GO_MOD.read_text())
    assert m, f"no k8s.io/kubernetes version in {CLUSTER_GO_MOD}"
    return f"v{m[1]}"


def kube_score(binary: Path, variant: str, written: Written) -> Iterator[Finding]:
    """kube-score's checks graded below 'all OK' (warnings too). One run per variant, since
    some checks relate objects to each other (a NetworkPolicy selects a pod)."""
    files = sorted(path for path, (v, _) in written.items() if v == variant)
    report = json_report(
        "kube-score",
        [binary, "score", "--output-format", "json", "--kubernetes-version",
         kubernetes_version(), "--enable-optional-test", "container-seccomp-profile",
         "--enable-optional-test", "container-ports-check", *files],
        timeout=120,
    )  # fmt: skip
    scored_pods = {f"{o['type_meta']['kind']}/{o['object_meta']['name']}" for o in report}
    pods = {object_name(obj) for v, obj in written.values() if v == variant and pod_spec(obj)}
    assert pods <= scored_pods, f"kube-score did not score {sorted(pods - scored_pods)}"
    for scored in report:
        obj = f"{scored['type_meta']['kind']}/{scored['object_meta']['name']}"
        for result in scored["checks"]:
            if result["skipped"] or result["grade"] >= 10:  # 10: all OK, 7: almost, 5, 1: critical
                continue
            for comment in result["comments"] or [{}]:
                yield Finding(
                    variant, "kube-score", result["check"]["id"], obj, comment.get("path") or "",
                    comment.get("summary") or result["check"]["name"],
                )  # fmt: skip


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> list[Finding]:
    paths = scanner_paths()
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run `make scanners`")
    root = tmp_path_factory.mktemp("manifests")
    written = write_manifests(root)
    found = list(checkov(paths["checkov"], root, written))
    for variant in (*VARIANTS, CANARY_VARIANT):
        found += kube_score(paths["kube-score"], variant, written)
    return found


# ---------------------------------------------------------------------------------------------
# The allowlist


@dataclass(frozen=True)
class Accepted:
    checker: str
    check: str
    object: str  # glob over Kind/name
    variant: str  # glob over VARIANTS
    message: str  # glob over the checker's message, for a check that reports several things
    why: str

    def matches(self, f: Finding) -> bool:
        return (
            f.checker == self.checker
            and f.check == self.check
            and fnmatch.fnmatchcase(f.object, self.object)
            and fnmatch.fnmatchcase(f.variant, self.variant)
            and fnmatch.fnmatchcase(f.message, self.message)
        )

    def __str__(self) -> str:
        return f"{self.checker} {self.check} on {self.object} ({self.variant}): {self.message}"


def allowlist() -> list[Accepted]:
    entries = yaml.safe_load(ALLOWLIST.read_text()) or []
    out = []
    for i, entry in enumerate(entries):
        unknown = set(entry) - {"checker", "check", "object", "variant", "message", "why"}
        assert not unknown, f"{ALLOWLIST.name} entry {i}: unknown keys {sorted(unknown)}"
        assert entry.get("checker") in ("checkov", "kube-score"), f"entry {i}: checker?"
        assert entry.get("check") and entry.get("object"), f"entry {i}: check and object"
        assert len(str(entry.get("why", "")).split()) >= 5, f"entry {i}: say why it is accepted"
        out.append(Accepted(
            entry["checker"], entry["check"], entry["object"], entry.get("variant", "*"),
            entry.get("message", "*"), entry["why"],
        ))  # fmt: skip
    return out


def product(found: Iterable[Finding]) -> list[Finding]:
    return [f for f in found if f.variant != CANARY_VARIANT]


def test_both_scanners_report_what_they_find(findings):
    canary = {(f.checker, f.check) for f in findings if f.variant == CANARY_VARIANT}
    assert ("checkov", "CKV_K8S_16") in canary  # container should not be privileged
    assert ("kube-score", "container-security-context-privileged") in canary


def test_every_finding_is_fixed_or_allowlisted_with_a_reason(findings):
    exceptions = allowlist()
    open_findings = sorted(
        {str(f) for f in product(findings) if not any(e.matches(f) for e in exceptions)}
    )
    assert not open_findings, (
        f"{len(open_findings)} finding(s) neither fixed nor accepted in {ALLOWLIST.name}:\n"
        + "\n".join(open_findings)
    )


def test_every_allowlist_entry_still_matches_a_finding(findings):
    stale = [str(e) for e in allowlist() if not any(e.matches(f) for f in product(findings))]
    assert not stale, f"remove from {ALLOWLIST.name}, nothing matches any more:\n" + "\n".join(
        stale
    )


def test_every_scratch_volume_is_bounded():
    """Neither scanner checks it: an emptyDir without a sizeLimit lets a pod fill its node's disk
    (candidate code writing without end, in an experiment pod)."""
    unbounded = [
        f"{variant}: {object_name(obj)} volume {volume['name']}"
        for variant in VARIANTS
        for obj in deployed(variant)
        for volume in pod_spec(obj).get("volumes") or []
        if "emptyDir" in volume and not (volume["emptyDir"] or {}).get("sizeLimit")
    ]
    assert unbounded == []
