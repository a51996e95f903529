"""A real Prometheus server for tests: Debian's `prometheus` binary on loopback, scraping targets
the test names, queried through its HTTP API.

`make prometheus` (a step of `make test`) unpacks Debian's package into the cache; the binary is
found there, or through AUTORESEARCH_PROMETHEUS, or on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from support.processes import free_port, stop

CACHED = (
    Path.home() / ".cache" / "autoresearch-operator" / "prometheus" / "usr" / "bin" / "prometheus"
)


def find_binary() -> Path | None:
    """The prometheus binary: AUTORESEARCH_PROMETHEUS, the cache `make prometheus` fills, PATH."""
    if os.environ.get("AUTORESEARCH_PROMETHEUS"):
        return Path(os.environ["AUTORESEARCH_PROMETHEUS"])
    if CACHED.is_file():
        return CACHED
    found = shutil.which("prometheus")
    return Path(found) if found else None


class PromQLError(RuntimeError):
    """Prometheus refused a query; the message is its own."""


class Prometheus:
    """One Prometheus process with its own storage under `directory`, listening on loopback."""

    def __init__(self, binary: Path, directory: Path, targets: list[str], scrape_interval: str):
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [
                {
                    "job_name": "autoresearch-operator",
                    # As the chart's ServiceMonitor: the metrics' own namespace label is kept.
                    "honor_labels": True,
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    # Debian's build looks for its web assets under /usr/share; the API needs none.
                    f"--web.console.templates={directory}",
                    f"--web.console.libraries={directory}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._wait_ready(60)

    @classmethod
    def start(cls, directory: Path, targets: list[str], scrape_interval: str = "1s") -> Prometheus:
        binary = find_binary()
        if binary is None:
            raise FileNotFoundError("prometheus not found: run `make prometheus`")
        directory.mkdir(parents=True, exist_ok=True)
        return cls(binary, directory, targets, scrape_interval)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"prometheus not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:  # 400/422: a bad query; the body says why
            body = json.load(err)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')} (in {params})")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: [{'metric': {labels}, 'value': float}, ...]."""
        data = self._get("/api/v1/query", query=promql)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": float(data["result"][1])}]
        return [
            {"metric": sample["metric"], "value": float(sample["value"][1])}
            for sample in data["result"]
        ]

    def targets_up(self) -> list[str]:
        """Scrape URLs of the targets whose last scrape succeeded."""
        data = self._get("/api/v1/targets", state="active")
        return [t["scrapeUrl"] for t in data["activeTargets"] if t["health"] == "up"]

    def stop(self) -> None:
        stop(self.proc)
