"""Containment of code an LLM wrote (issue 12), the parts that need no cluster: the operator's
defaults for what an org omits, bounded experiment and prepare pods, the deny-all NetworkPolicy,
and where a Secret's value may be sent."""

from __future__ import annotations

import json

import pytest

from autoresearch_operator.contest_spec import contest_from_resource
from autoresearch_operator.k8s import builders
from autoresearch_operator.k8s.config import PREPARE_RESOURCES, ConfigError, load_config
from autoresearch_operator.k8s.secrets import (
    ALLOWED_HOSTS_ANNOTATION,
    SecretNotAllowed,
    check_destination,
    destination,
    host_allowed,
)
from autoresearch_operator.spec import org_from_resource, with_defaults

# What the chart renders into AUTORESEARCH_ORG_DEFAULTS from its default values.
CHART_DEFAULTS = {
    "trainer": {
        "image": "registry.example/trainer@sha256:" + "a" * 64,
        "timeBudgetSeconds": 300,
        "resources": {
            "requests": {"cpu": "4", "memory": "32Gi", "ephemeral-storage": "1Gi"},
            "limits": {
                "cpu": "16",
                "memory": "64Gi",
                "ephemeral-storage": "50Gi",
                "nvidia.com/gpu": 1,
            },
        },  # fmt: skip
    },
    "proposer": {"model": "gpt-4o-mini"},
    "budget": {"maxExperiments": 100, "maxGPUHours": 8},
}


def org(spec: dict, defaults: dict | None = CHART_DEFAULTS):
    body = {"kind": "ResearchOrg", "metadata": {"name": "o"}, "spec": {"program": "x", **spec}}
    return org_from_resource(body, defaults=defaults)


# -- the operator's defaults ---------------------------------------------------------------------


def test_an_org_that_omits_a_field_gets_the_operators_default_and_keeps_what_it_set():
    o = org({"trainer": {"profile": "tiny"}, "budget": {"maxExperiments": 5}})
    assert o.spec.trainer.image == CHART_DEFAULTS["trainer"]["image"]
    assert o.spec.trainer.resources == CHART_DEFAULTS["trainer"]["resources"]
    assert o.spec.trainer.profile == "tiny"  # its own, beside the defaults
    assert o.spec.budget.maxExperiments == 5 and o.spec.budget.maxGPUHours == 8
    assert o.spec.proposer.model == "gpt-4o-mini"
    # without the operator's defaults, the models' own
    assert org({}, defaults=None).spec.budget.maxExperiments == 20


def test_resources_an_org_sets_are_taken_whole_never_mixed_with_the_defaults():
    """A request of the org's own beside a smaller default limit would be refused by the API."""
    own = {"requests": {"memory": "100Gi"}, "limits": {"nvidia.com/gpu": 8}}
    assert org({"trainer": {"resources": own}}).spec.trainer.resources == own
    assert org({"trainer": {"resources": {}}}).spec.trainer.resources == {}


def test_with_defaults_never_changes_its_inputs():
    spec, defaults = {"trainer": {"profile": "tiny"}}, {"trainer": {"image": "i"}}
    assert with_defaults(spec, defaults) == {"trainer": {"profile": "tiny", "image": "i"}}
    assert spec == {"trainer": {"profile": "tiny"}} and defaults == {"trainer": {"image": "i"}}


def test_a_contests_terms_and_entrants_get_the_same_defaults():
    body = {
        "kind": "ResearchContest",
        "metadata": {"name": "c"},
        "spec": {
            "entrants": [
                {"name": "a", "program": "x"},
                {"name": "b", "program": "y", "proposer": {"type": "openai"}},
            ],
            "terms": {"budget": {"maxExperiments": 4}},
        },  # fmt: skip
    }
    contest = contest_from_resource(body, defaults=CHART_DEFAULTS)
    assert contest.spec.terms.trainer.resources == CHART_DEFAULTS["trainer"]["resources"]
    assert contest.spec.terms.budget.maxExperiments == 4
    assert contest.spec.entrants[1].proposer.model == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("defaults", "says"),
    [
        ('{"trainer": {"timeBudgetSeconds": 0}}', "trainer.timeBudgetSeconds"),
        ('{"trainer": {"gpus": 1}}', "unknown field"),
        ('{"program": "x"}', "program: an org's own"),
        ("[1]", "expected a JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_org_defaults_fail_the_operators_start_naming_the_field(defaults, says):
    with pytest.raises(ConfigError) as err:
        load_config({"AUTORESEARCH_ORG_DEFAULTS": defaults})
    assert str(err.value).startswith("AUTORESEARCH_ORG_DEFAULTS:") and says in str(err.value)


def test_the_containment_settings_parse_and_bad_ones_name_the_variable():
    config = load_config(
        {
            "AUTORESEARCH_ORG_DEFAULTS": json.dumps(CHART_DEFAULTS),
            "AUTORESEARCH_SECRET_HOSTS": "api.openai.com, LLM.internal:8443,*.example.com",
            "AUTORESEARCH_NETWORK_POLICY": "false",
        }
    )
    assert config.org_defaults == CHART_DEFAULTS and config.network_policy is False
    assert config.secret_hosts == ("api.openai.com", "llm.internal:8443", "*.example.com")
    assert config.prepare_resources == PREPARE_RESOURCES
    for variable, value, says in [
        ("SECRET_HOSTS", "https://api.openai.com/v1", "no scheme, no path"),
        ("NETWORK_POLICY", "yes", "true or false"),
        ("PREPARE_RESOURCES", '{"limit": {}}', "'requests'"),
    ]:
        with pytest.raises(ConfigError, match=f"^AUTORESEARCH_{variable}:.*{says}"):
            load_config({f"AUTORESEARCH_{variable}": value})


# -- bounded pods, no network ----------------------------------------------------------------------


def test_an_experiment_pod_is_bounded_by_the_defaults_and_its_scratch_size():
    o = org({"trainer": {"scratchSize": "5Gi"}})
    body = {"metadata": {"name": "o", "namespace": "ns", "uid": "u"}}
    job = builders.experiment_job(o, body, 1, "c" * 40, data_claim="d")
    pod = job["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        resources = container["resources"]
        assert {"cpu", "memory", "ephemeral-storage"} <= set(resources["requests"])
        assert {"cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"} <= set(resources["limits"])
    assert {v["name"]: v["emptyDir"]["sizeLimit"] for v in pod["volumes"] if "emptyDir" in v} == {
        "work": "5Gi", "train-tmp": "5Gi", "evaluate-tmp": "5Gi"
    }  # fmt: skip
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == 10100


def test_the_prepare_job_is_bounded_too():
    job = builders.prepare_job(
        "ns", image="i", data_claim="d", sources=["s"], resources=PREPARE_RESOURCES
    )
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"] == PREPARE_RESOURCES
    assert [v["emptyDir"] for v in pod["volumes"] if "emptyDir" in v] == [{"sizeLimit": "4Gi"}]
    # without resources of its own, still never an unbounded disk
    bare = builders.prepare_job("ns", image="i", data_claim="d", sources=["s"])
    assert bare["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"ephemeral-storage": "4Gi"}
    }


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_the_network_policy_denies_everything_to_experiment_pods_and_never_selects_prepare():
    policy = builders.network_policy("ns")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in spec and "egress" not in spec  # no rule: nothing passes either way
    o = org({})
    body = {"metadata": {"name": "o", "namespace": "ns", "uid": "u"}}
    experiment = builders.experiment_job(o, body, 1, "c" * 40, data_claim="d")
    prepare = builders.prepare_job("ns", image="i", data_claim="d", sources=["https://x"])
    pod_labels = lambda job: job["spec"]["template"]["metadata"]["labels"]  # noqa: E731
    assert matches(spec["podSelector"], pod_labels(experiment))
    assert not matches(spec["podSelector"], pod_labels(prepare))  # it downloads its sources


# -- where a Secret may go -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.openai.com/v1", ("api.openai.com", None)),
        ("http://127.0.0.1:8000/v1", ("127.0.0.1", 8000)),
        ("https://alice@git.example.com/org/repo.git", ("git.example.com", None)),
        ("ssh://git@git.example.com:2222/org/repo.git", ("git.example.com", 2222)),
        ("git@github.com:org/repo.git", ("github.com", None)),
        ("http://[::1]:9000/v1", ("::1", 9000)),
    ],
)
def test_the_destination_of_every_url_form_the_operator_sends_to(url, expected):
    assert destination(url) == expected


@pytest.mark.parametrize(
    ("host", "port", "patterns", "allowed"),
    [
        ("api.openai.com", 443, ["api.openai.com"], True),
        ("API.openai.com", None, ["Api.OpenAI.com"], True),  # DNS names know no case
        ("llm.internal", 8443, ["llm.internal:8443"], True),
        ("llm.internal", 9000, ["llm.internal:8443"], False),
        ("a.example.com", None, ["*.example.com"], True),
        ("example.com", None, ["*.example.com"], False),
        ("evil-example.com", None, ["*.example.com"], False),
        ("api.openai.com.evil.io", None, ["api.openai.com"], False),
        ("::1", 9000, ["[::1]:9000"], True),
    ],
)
def test_host_patterns(host, port, patterns, allowed):
    assert host_allowed(host, port, patterns) is allowed


def test_a_secret_goes_only_where_the_operator_or_the_secret_itself_allows():
    def check(url: str, annotation: str | None = None) -> None:
        annotations = {ALLOWED_HOSTS_ANNOTATION: annotation} if annotation else {}
        check_destination(
            url, field="spec.proposer.baseURL", secret="ns/llm",
            configured=("api.openai.com",), annotations=annotations,
        )  # fmt: skip

    check("https://api.openai.com/v1")
    check("http://10.0.0.5:8000/v1", annotation="vllm.internal, 10.0.0.5:8000")
    with pytest.raises(SecretNotAllowed) as err:
        check("https://attacker.example/v1", annotation="vllm.internal")
    message = str(err.value)
    assert message.startswith("spec.proposer.baseURL:") and "Secret ns/llm" in message
    assert "attacker.example" in message and ALLOWED_HOSTS_ANNOTATION in message
