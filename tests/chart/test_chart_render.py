"""The Helm chart, rendered and linted by Helm's own Go SDK and checked against Kubernetes schemas."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from helm_render import CHART, NAMESPACE, ROOT, helm, objects, one, render, render_files

from autoresearch_operator.k8s.config import PREFIX, VARIABLES, load_config
from autoresearch_operator.spec import org_from_resource

kubernetes_validate = pytest.importorskip("kubernetes_validate")

KUBERNETES_VERSION = "1.34.0"
MONITORING_API = "monitoring.coreos.com/v1"
# Kinds that the Kubernetes OpenAPI schemas do not describe (they come from CRDs).
CUSTOM_KINDS = {"ServiceMonitor"}

# Every optional branch of the templates switched on (or to its other side).
EVERYTHING_SET: dict[str, Any] = {
    "images": {"trainer": {"digest": "sha256:" + "ab" * 32}},
    "watchNamespaces": ["research", "contest"],
    "imagePullSecrets": [{"name": "regcred"}],
    "operator": {"verbose": True, "maxOrgs": 8, "pollSeconds": 2.5},
    "trainer": {"gpuResourceName": "amd.com/gpu", "gpusPerExperiment": 2, "queueName": "gpus"},
    "llm": {"baseURL": "http://llm.local:8000/v1", "model": "qwen3"},
    "budget": {"maxGPUHours": 0.5, "maxLLMTokens": 1000000},  # floats in Go: int64 keeps 1e+06 out
    "persistence": {
        "repo": {"storageClassName": "fast"},
        "data": {
            "claimName": "shared-data",
            "storageClassName": "nfs",
            "accessModes": ["ReadWriteMany"],
            "sources": ["https://example.org/corpus.txt", "/app/corpus.txt"],
            "vocabSize": 1048576,
        },
    },
    "security": {"secretHosts": ["github.com", "*.corp.example"]},
    "metrics": {"port": 9100, "serviceMonitor": {"labels": {"release": "prom"}}},
    "dashboard": {"labels": {"team": "research"}, "annotations": {"grafana_folder": "Research"}},
    "serviceAccount": {"annotations": {"example.com/role": "operator"}},
    "podAnnotations": {"example.com/scrape": "true"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "control", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "preference": {
                        "matchExpressions": [
                            {"key": "pool", "operator": "In", "values": ["system"]}
                        ]
                    },
                }
            ]
        }
    },
}
ALTERNATIVES: dict[str, Any] = {
    "serviceAccount": {"create": False, "name": "existing"},
    "rbac": {"create": False},
    "persistence": {"data": {"create": False}},
    "dashboard": {"enabled": False},
    "llm": {"apiKeySecret": {"name": ""}},
    "networkPolicy": {"enabled": False},
}
VARIANTS = {
    "defaults": ({}, ()),
    "everything-set": (EVERYTHING_SET, (MONITORING_API,)),
    "alternatives": (ALTERNATIVES, ()),
}


@pytest.fixture(scope="module")
def defaults() -> dict[str, list[dict[str, Any]]]:
    return render()


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


# -- Helm's own checks ----------------------------------------------------------------------


def test_helm_lint_strict_finds_nothing_worse_than_info():
    report = helm.lint(CHART, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


@pytest.mark.parametrize(
    "values, where",
    [
        ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "'enable' not allowed"),
        ({"images": {"operator": {"tag": "0.1.0", "sha": "x"}}}, "'sha' not allowed"),
    ],
    ids=["top-level", "nested", "image"],
)
def test_values_schema_rejects_an_unknown_key(values, where):
    with pytest.raises(helm.HelmValuesError, match=where):
        render(values)
    assert any(where in e for e in helm.lint(CHART, values)["errors"])


@pytest.mark.parametrize(
    "values, where",
    [
        ({"metrics": {"port": "8080"}}, "/metrics/port': got string, want integer"),
        ({"watchNamespaces": "research"}, "/watchNamespaces': got string, want array"),
        ({"dashboard": {"enabled": "yes"}}, "/dashboard/enabled': got string, want boolean"),
        ({"persistence": {"repo": {"size": 10}}}, "/persistence/repo/size': got number"),
        ({"networkPolicy": {"enabled": "true"}}, "/networkPolicy/enabled': got string"),
    ],
    ids=["port", "namespaces", "boolean", "size", "network-policy"],
)
def test_values_schema_rejects_a_wrong_type(values, where):
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        render(values)
    assert any(where in e for e in helm.lint(CHART, values)["errors"])


def test_every_values_key_has_a_sentence_above_it():
    """camelCase keys, each with a full-sentence comment right above it (free-form maps aside)."""
    free_form = {"resources", "requests", "limits"}  # Kubernetes' own shape, not ours
    missing, parents, previous = [], [], ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z][\w.]*):", line)
        if match:
            depth = len(match.group(1)) // 2
            parents = [*parents[:depth], match.group(2)]
            under_free_form = any(p in free_form for p in parents[:-1])
            comment = previous.strip()
            if not under_free_form:
                if not re.match(r"^[a-z][a-zA-Z0-9]*$", match.group(2)):
                    missing.append(f"{'.'.join(parents)}: not camelCase")
                if not comment.startswith("# "):
                    missing.append(f"{'.'.join(parents)}: no comment above")
                elif not comment[2:3].isupper() or not comment.endswith("."):
                    missing.append(f"{'.'.join(parents)}: {comment!r} is not a sentence")
        if line.strip():
            previous = line
    assert missing == []


# -- what Kubernetes will accept ----------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_manifest_is_valid_for_kubernetes_1_34(variant):
    values, api_versions = VARIANTS[variant]
    docs = objects(render(values, api_versions=api_versions))
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_charts_crd_is_a_valid_kubernetes_object():
    crd = yaml.safe_load((CHART / "crds" / "researchorg.yaml").read_text())
    kubernetes_validate.validate(crd, KUBERNETES_VERSION, strict=True)


def test_chart_crds_are_an_identical_copy_of_the_top_level_crds():
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == top
    for name in top:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"copy it: cp crds/{name} charts/autoresearch-operator/crds/{name}"
        )


# -- the operator Deployment -------------------------------------------------------------------


def test_deployment_runs_one_replica_recreated_with_probes_on_healthz_and_readyz(defaults):
    deployment = one(defaults, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    container = spec["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert (liveness["httpGet"]["path"], readiness["httpGet"]["path"]) == ("/healthz", "/readyz")
    for probe in (liveness, readiness):
        port = ports[probe["httpGet"]["port"]]
        assert str(port) == env_of(deployment)["AUTORESEARCH_METRICS_PORT"] == "8080"
    assert (readiness["periodSeconds"], readiness["failureThreshold"]) == (10, 3)
    assert readiness["timeoutSeconds"] == 5
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_operator_runs_as_non_root_with_a_read_only_root_filesystem(defaults):
    pod = one(defaults, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    writable = {m["mountPath"] for m in container["volumeMounts"]}
    assert {env_of(one(defaults, "Deployment"))["HOME"], "/var/lib/autoresearch"} <= writable


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_deployment_env_is_a_configuration_the_operator_accepts(variant):
    values, api_versions = VARIANTS[variant]
    rendered = render(values, api_versions=api_versions)
    env = env_of(one(rendered, "Deployment"))
    ours = {name.removeprefix(PREFIX) for name in env if name.startswith(PREFIX)}
    assert ours <= set(VARIABLES), f"the operator does not read {ours - set(VARIABLES)}"
    config = load_config(env)  # raises ConfigError naming a bad variable
    assert config.namespaces == tuple(values.get("watchNamespaces", ()))


def test_env_points_the_operator_at_the_claims_the_chart_creates(defaults):
    deployment = one(defaults, "Deployment")
    config = load_config(env_of(deployment))
    pod = deployment["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}  # fmt: skip
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    pvcs = {
        doc["metadata"]["name"] for doc in defaults["pvc-repo.yaml"] + defaults["pvc-data.yaml"]
    }
    state_volume = next(name for name, path in mounts.items() if path == str(config.state_dir))
    assert claims[state_volume] in pvcs  # journals and git repositories survive a restart
    assert config.repo_dir.is_relative_to(config.state_dir)
    assert config.data_claim in pvcs  # the claim experiment pods mount is the one created here
    assert config.trainer_image == "ghcr.io/autoresearch-operator/trainer:0.1.0"
    assert config.llm_secret_name == "autoresearch-llm"


def test_values_reach_the_operator_as_autoresearch_variables():
    env = env_of(one(render(EVERYTHING_SET), "Deployment"))
    config = load_config(env)
    assert config.namespaces == ("research", "contest")
    assert config.data_claim == "shared-data"
    assert config.data_sources == ("https://example.org/corpus.txt", "/app/corpus.txt")
    assert config.data_vocab_size == 1048576
    assert (config.metrics_port, config.max_orgs, config.poll_seconds) == (9100, 8, 2.5)


def images_of(rendered: dict[str, list[dict[str, Any]]]) -> tuple[str, str]:
    """The operator container's image and the trainer image the operator is told to use."""
    deployment = one(rendered, "Deployment")
    operator = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    return operator, env_of(deployment)["AUTORESEARCH_TRAINER_IMAGE"]


def test_images_are_pinned(defaults):
    for image in images_of(defaults):
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and tag not in ("", "latest"), image


DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_a_digest_replaces_the_tag_in_every_image_reference():
    values = {"images": {"operator": {"digest": DIGEST}, "trainer": {"digest": DIGEST}}}
    rendered = render(values)
    operator, trainer = images_of(rendered)
    assert operator == f"ghcr.io/autoresearch-operator/operator@{DIGEST}"
    assert trainer == f"ghcr.io/autoresearch-operator/trainer@{DIGEST}"
    assert org_defaults(rendered)["trainer"]["image"] == trainer
    assert f"image: {trainer}" in render_files(values)["NOTES.txt"]


@pytest.mark.parametrize("digest", ["sha256:abc", "0123456789abcdef" * 4, DIGEST.upper()])
def test_values_schema_refuses_a_digest_that_is_not_a_sha256(digest):
    with pytest.raises(helm.HelmValuesError, match="/images/trainer/digest"):
        render({"images": {"trainer": {"digest": digest}}})


# -- what an org gets for the fields it leaves out, and what untrusted code can reach -------------


def org_defaults(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return json.loads(env_of(one(rendered, "Deployment"))["AUTORESEARCH_ORG_DEFAULTS"])


def test_org_defaults_are_the_trainer_llm_and_budget_values(defaults):
    assert org_defaults(defaults) == {
        "trainer": {
            "image": "ghcr.io/autoresearch-operator/trainer:0.1.0",
            "timeBudgetSeconds": 300,
            "resources": {
                "requests": {"cpu": "4", "memory": "32Gi", "ephemeral-storage": "1Gi"},
                "limits": {
                    "cpu": "16",
                    "memory": "64Gi",
                    "ephemeral-storage": "50Gi",
                    "nvidia.com/gpu": 1,
                },
            },
        },
        "proposer": {"model": "gpt-4o-mini"},  # no baseURL, no queueName: their values are empty
        "budget": {"maxExperiments": 100, "maxGPUHours": 8},  # maxLLMTokens 0: no limit
    }


def test_org_defaults_carry_every_optional_value_that_is_set():
    defaults = org_defaults(render(EVERYTHING_SET))
    assert defaults["trainer"]["resources"]["limits"]["amd.com/gpu"] == 2
    assert defaults["trainer"]["queueName"] == "gpus"
    assert defaults["proposer"] == {"model": "qwen3", "baseURL": "http://llm.local:8000/v1"}
    assert defaults["budget"] == {"maxExperiments": 100, "maxGPUHours": 0.5,
                                  "maxLLMTokens": 1000000}  # fmt: skip


def test_every_resource_of_experiment_and_prepare_pods_is_bounded(defaults):
    env = env_of(one(defaults, "Deployment"))
    trainer = org_defaults(defaults)["trainer"]["resources"]
    prepare = json.loads(env["AUTORESEARCH_PREPARE_RESOURCES"])
    for resources in (trainer, prepare):
        for kind in ("requests", "limits"):
            assert {"cpu", "memory", "ephemeral-storage"} <= set(resources[kind]), resources
    assert prepare["limits"] == {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "20Gi"}


@pytest.mark.parametrize(
    "values, hosts",
    [
        ({}, ["api.openai.com"]),
        ({"llm": {"baseURL": "https://llm.example.org/v1"}}, ["llm.example.org"]),
        ({"llm": {"baseURL": "http://vllm.research.svc:8000/v1"}}, ["vllm.research.svc:8000"]),
        (
            {"security": {"secretHosts": ["github.com", "*.corp.example", "api.openai.com"]}},
            ["github.com", "*.corp.example", "api.openai.com"],
        ),
    ],
    ids=["openai", "base-url", "base-url-port", "user-hosts"],
)
def test_secret_hosts_always_include_the_llm_endpoint(values, hosts):
    env = env_of(one(render(values), "Deployment"))
    assert env["AUTORESEARCH_SECRET_HOSTS"].split(",") == hosts


@pytest.mark.parametrize("host", ["https://github.com", "github.com/org", "*", "a b"])
def test_values_schema_refuses_a_secret_host_that_is_no_host(host):
    with pytest.raises(helm.HelmValuesError, match="/security/secretHosts/0"):
        render({"security": {"secretHosts": [host]}})


def test_network_policy_is_on_unless_turned_off(defaults):
    assert env_of(one(defaults, "Deployment"))["AUTORESEARCH_NETWORK_POLICY"] == "true"
    off = render({"networkPolicy": {"enabled": False}})
    assert env_of(one(off, "Deployment"))["AUTORESEARCH_NETWORK_POLICY"] == "false"


# -- monitoring ----------------------------------------------------------------------------------


def test_service_monitor_is_rendered_only_where_its_api_exists():
    assert render()["servicemonitor.yaml"] == []
    with_api = render(api_versions=(MONITORING_API,))["servicemonitor.yaml"]
    assert [doc["kind"] for doc in with_api] == ["ServiceMonitor"]
    disabled = {"metrics": {"serviceMonitor": {"enabled": False}}}
    assert render(disabled, api_versions=(MONITORING_API,))["servicemonitor.yaml"] == []


def test_service_monitor_scrapes_the_metrics_service_with_the_configured_labels():
    rendered = render(EVERYTHING_SET, api_versions=(MONITORING_API,))
    monitor, service = one(rendered, "ServiceMonitor"), one(rendered, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # the metrics' own `namespace` label must win
    assert service["spec"]["ports"][0]["port"] == 9100


def test_metrics_service_selects_the_operator_pod(defaults):
    pod_labels = one(defaults, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert one(defaults, "Service")["spec"]["selector"].items() <= pod_labels.items()


def test_dashboard_configmap_carries_files_dashboard_json_for_grafanas_sidecar(defaults):
    configmap = one(defaults, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = configmap["data"].values()
    assert json.loads(text) == json.loads((CHART / "files" / "dashboard.json").read_text())
    assert render({"dashboard": {"enabled": False}})["dashboard-configmap.yaml"] == []


# -- NOTES.txt ---------------------------------------------------------------------------------


def test_notes_starter_org_is_a_valid_researchorg_with_the_release_defaults():
    notes = render_files(EVERYTHING_SET)["NOTES.txt"]
    body = yaml.safe_load(notes.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0])
    defaults = org_defaults(render(EVERYTHING_SET))
    for field in ("trainer", "budget"):
        assert body["spec"][field] == defaults[field]  # it shows what an org would get anyway
    assert body["spec"]["proposer"] == {"type": "openai", **defaults["proposer"]}
    org = org_from_resource(body)
    assert org.spec.trainer.resources["limits"]["amd.com/gpu"] == 2
    assert org.spec.trainer.queueName == "gpus"
    assert (org.spec.proposer.model, org.spec.proposer.baseURL) == (
        "qwen3",
        "http://llm.local:8000/v1",
    )
    assert (org.spec.budget.maxGPUHours, org.spec.budget.maxLLMTokens) == (0.5, 1000000)


def test_notes_tell_the_user_what_to_run_next():
    notes = render_files()["NOTES.txt"]
    for step in (
        f"kubectl -n {NAMESPACE} create secret generic autoresearch-llm",
        "apply -k program-examples/",
        "kubectl get researchorgs",
        "port-forward svc/kube-prometheus-stack-grafana",
    ):
        assert step in notes


def test_values_schema_closes_every_object_it_describes():
    def walk(node: Any, path: str):
        if isinstance(node, dict):
            if "properties" in node:
                yield path, node.get("additionalProperties")
            for key, child in node.items():
                yield from walk(child, f"{path}.{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                yield from walk(child, f"{path}[{index}]")

    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = [path for path, extra in walk(schema, "$") if extra is not False]
    assert open_objects == []
