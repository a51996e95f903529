"""The operator's configuration: one set of AUTORESEARCH_* environment variables, read once.

`load_config(os.environ)` validates every variable at start and raises ConfigError naming the
variable and what it accepts, so a bad Deployment fails loudly instead of misbehaving later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..spec import DNS_LABEL, OrgSpecError, TrainerSpec, check_org_defaults
from .secrets import check_host_pattern

PREFIX = "AUTORESEARCH_"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

# Every variable the operator reads, with its default and what it means (docs/operator.md).
VARIABLES: dict[str, tuple[str, str]] = {
    "NAMESPACES": ("", "comma-separated namespaces to watch; empty watches all namespaces"),
    "STATE_DIR": ("/var/lib/autoresearch", "journals live under <STATE_DIR>/<namespace>/<org>/"),
    "REPO_DIR": ("", "git repositories, one per namespace; default <STATE_DIR>/repos"),
    "DATA_CLAIM": ("autoresearch-data", "PersistentVolumeClaim holding the prepared data"),
    "DATA_SOURCES": (
        "",
        "comma-separated URLs or in-image paths for prepare.py; empty: no prepare",
    ),
    "DATA_VOCAB_SIZE": ("", "tokenizer vocabulary size for prepare.py; empty: its default"),
    "TRAINER_IMAGE": (TrainerSpec().image, "image of the data-prepare Job"),
    "METRICS_PORT": ("8080", "port of /metrics and /healthz; 0 turns the server off"),
    "LLM_SECRET_NAME": ("", "Secret with the LLM API key for orgs without apiKeySecretRef"),
    "LLM_SECRET_KEY": ("apiKey", "key inside that Secret"),
    "POLL_SECONDS": (
        "10",
        "how often a contest pass runs and (--verbose) a training log is sampled",
    ),
    "STATUS_INTERVAL_SECONDS": ("5", "least time between two status patches of one org"),
    "MAX_ORGS": ("64", "ResearchOrgs one operator runs at once (worker threads)"),
    "ORG_DEFAULTS": (
        "",
        "JSON of a partial ResearchOrg spec: the values an org gets for the fields it omits "
        "(trainer.image, trainer.resources, budget.maxExperiments, proposer.model, ...)",
    ),
    "PREPARE_RESOURCES": (
        "",
        "JSON of the prepare Job container's resources; empty: the operator's bounded default",
    ),
    "SECRET_HOSTS": (
        "",
        "comma-separated hosts (host, host:port, *.domain) that may receive a Secret's value "
        "(LLM API key, git push credential); a Secret may add its own with the annotation "
        "autoresearch.dev/allowed-hosts",
    ),
    "NETWORK_POLICY": (
        "true",
        "create the deny-all NetworkPolicy for experiment pods in every namespace served",
    ),
}

# Bounds of the prepare Job when AUTORESEARCH_PREPARE_RESOURCES is not set (the chart's default).
PREPARE_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"},
    "limits": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "20Gi"},
}


class ConfigError(ValueError):
    """An AUTORESEARCH_* variable that does not validate; the message names it."""


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    state_dir: Path = Path("/var/lib/autoresearch")
    repo_dir: Path = Path("/var/lib/autoresearch/repos")
    data_claim: str = "autoresearch-data"
    data_sources: tuple[str, ...] = ()
    data_vocab_size: int | None = None
    trainer_image: str = TrainerSpec().image
    metrics_port: int = 8080
    llm_secret_name: str | None = None
    llm_secret_key: str = "apiKey"
    poll_seconds: float = 10.0
    status_interval_seconds: float = 5.0
    max_orgs: int = 64
    org_defaults: dict[str, Any] = field(default_factory=dict)
    prepare_resources: dict[str, Any] = field(default_factory=lambda: dict(PREPARE_RESOURCES))
    secret_hosts: tuple[str, ...] = ()
    network_policy: bool = True

    def journal_dir(self, namespace: str, org: str) -> Path:
        return self.state_dir / namespace / org

    def repo_path(self, namespace: str) -> Path:
        """One repository per namespace: org names (and so branches) are unique only there."""
        return self.repo_dir / namespace


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{PREFIX}{name}: expected {low} to {high}, got {value}")
    return value


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}: expected seconds, got {raw!r}") from None
    if not 0 < value <= 3600:
        raise ConfigError(f"{PREFIX}{name}: expected more than 0 and at most 3600, got {raw}")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _json_object(name: str, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{PREFIX}{name}: not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{PREFIX}{name}: expected a JSON object, got {type(value).__name__}")
    return value


def _bool(name: str, raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise ConfigError(f"{PREFIX}{name}: expected true or false, got {raw!r}")
    return raw.lower() == "true"


def _resources(name: str, raw: str) -> dict[str, Any]:
    value = _json_object(name, raw)
    unknown = sorted(set(value) - {"requests", "limits"})
    if unknown or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError(
            f"{PREFIX}{name}: expected {{'requests': {{...}}, 'limits': {{...}}}}, got {raw!r}"
        )
    return value


def load_config(environ: Mapping[str, str]) -> OperatorConfig:
    """The configuration from AUTORESEARCH_* variables; ConfigError names the first bad one."""

    def get(name: str) -> str:
        return environ.get(PREFIX + name, VARIABLES[name][0]).strip()

    namespaces = _list(get("NAMESPACES"))
    for ns in namespaces:
        if not DNS_LABEL.match(ns):
            raise ConfigError(f"{PREFIX}NAMESPACES: {ns!r} is not a valid namespace name")
    state_dir = Path(get("STATE_DIR"))
    if not state_dir.is_absolute():
        raise ConfigError(f"{PREFIX}STATE_DIR: expected an absolute path, got {str(state_dir)!r}")
    repo_dir = Path(get("REPO_DIR")) if get("REPO_DIR") else state_dir / "repos"
    if not repo_dir.is_absolute():
        raise ConfigError(f"{PREFIX}REPO_DIR: expected an absolute path, got {str(repo_dir)!r}")
    data_claim = get("DATA_CLAIM")
    if not _DNS_SUBDOMAIN.match(data_claim):
        raise ConfigError(f"{PREFIX}DATA_CLAIM: {data_claim!r} is not a valid claim name")
    vocab = get("DATA_VOCAB_SIZE")
    image = get("TRAINER_IMAGE")
    if not image or any(c.isspace() for c in image):
        raise ConfigError(f"{PREFIX}TRAINER_IMAGE: expected an image reference, got {image!r}")
    secret_name = get("LLM_SECRET_NAME") or None
    if secret_name is not None and not _DNS_SUBDOMAIN.match(secret_name):
        raise ConfigError(f"{PREFIX}LLM_SECRET_NAME: {secret_name!r} is not a valid Secret name")
    secret_key = get("LLM_SECRET_KEY")
    if not secret_key:
        raise ConfigError(f"{PREFIX}LLM_SECRET_KEY: must not be empty")
    org_defaults = _json_object("ORG_DEFAULTS", get("ORG_DEFAULTS")) if get("ORG_DEFAULTS") else {}
    try:
        check_org_defaults(org_defaults)
    except OrgSpecError as err:
        raise ConfigError(f"{PREFIX}ORG_DEFAULTS: {err}") from None
    hosts = _list(get("SECRET_HOSTS"))
    for host in hosts:
        problem = check_host_pattern(host)
        if problem:
            raise ConfigError(f"{PREFIX}SECRET_HOSTS: {host!r}: {problem}")
    prepare = get("PREPARE_RESOURCES")
    return OperatorConfig(
        namespaces=namespaces,
        state_dir=state_dir,
        repo_dir=repo_dir,
        data_claim=data_claim,
        data_sources=_list(get("DATA_SOURCES")),
        data_vocab_size=_int("DATA_VOCAB_SIZE", vocab, 256, 1 << 20) if vocab else None,
        trainer_image=image,
        metrics_port=_int("METRICS_PORT", get("METRICS_PORT"), 0, 65535),
        llm_secret_name=secret_name,
        llm_secret_key=secret_key,
        poll_seconds=_seconds("POLL_SECONDS", get("POLL_SECONDS")),
        status_interval_seconds=_seconds("STATUS_INTERVAL_SECONDS", get("STATUS_INTERVAL_SECONDS")),
        max_orgs=_int("MAX_ORGS", get("MAX_ORGS"), 1, 10000),
        org_defaults=org_defaults,
        prepare_resources=(
            _resources("PREPARE_RESOURCES", prepare) if prepare else dict(PREPARE_RESOURCES)
        ),
        secret_hosts=tuple(h.lower() for h in hosts),
        network_policy=_bool("NETWORK_POLICY", get("NETWORK_POLICY")),
    )
