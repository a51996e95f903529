"""Operator configuration: AUTORESEARCH_* variables, validated at start, errors name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoresearch_operator.k8s.config import ConfigError, load_config


def test_defaults_watch_every_namespace_and_keep_repos_under_the_state_dir():
    config = load_config({})
    assert config.namespaces == ()  # cluster-wide
    assert config.repo_dir == config.state_dir / "repos"
    assert config.metrics_port == 8080 and config.data_claim == "autoresearch-data"
    assert config.data_sources == () and config.llm_secret_name is None


def test_values_are_parsed_and_paths_are_per_namespace_and_org():
    config = load_config(
        {
            "AUTORESEARCH_NAMESPACES": "research, team-b",
            "AUTORESEARCH_STATE_DIR": "/state",
            "AUTORESEARCH_DATA_SOURCES": "https://x/shard_0.parquet,https://x/shard_1.parquet",
            "AUTORESEARCH_DATA_VOCAB_SIZE": "512",
            "AUTORESEARCH_METRICS_PORT": "0",
            "AUTORESEARCH_LLM_SECRET_NAME": "openai",
            "AUTORESEARCH_POLL_SECONDS": "0.5",
        }
    )
    assert config.namespaces == ("research", "team-b")
    assert config.journal_dir("research", "explorer") == Path("/state/research/explorer")
    assert config.repo_path("research") == Path("/state/repos/research")
    assert config.data_sources == ("https://x/shard_0.parquet", "https://x/shard_1.parquet")
    assert config.data_vocab_size == 512 and config.metrics_port == 0
    assert config.llm_secret_name == "openai" and config.poll_seconds == 0.5


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("NAMESPACES", "Research", "not a valid namespace"),
        ("STATE_DIR", "relative/dir", "absolute path"),
        ("REPO_DIR", "repos", "absolute path"),
        ("DATA_CLAIM", "Data_Claim", "not a valid claim name"),
        ("DATA_VOCAB_SIZE", "lots", "expected an integer"),
        ("METRICS_PORT", "70000", "expected 0 to 65535"),
        ("POLL_SECONDS", "0", "more than 0"),
        ("STATUS_INTERVAL_SECONDS", "soon", "expected seconds"),
        ("MAX_ORGS", "0", "expected 1 to"),
        ("TRAINER_IMAGE", "two words", "image reference"),
        ("LLM_SECRET_NAME", "Bad/Name", "not a valid Secret name"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(variable, value, says):
    with pytest.raises(ConfigError) as err:
        load_config({f"AUTORESEARCH_{variable}": value})
    assert str(err.value).startswith(f"AUTORESEARCH_{variable}:")
    assert says in str(err.value)


def test_the_operator_command_exits_2_naming_the_bad_variable(monkeypatch, capsys):
    from autoresearch_operator.operator_main import main

    monkeypatch.setenv("AUTORESEARCH_METRICS_PORT", "http")
    assert main(None) == 2
    assert "AUTORESEARCH_METRICS_PORT" in capsys.readouterr().err
