"""A real Prometheus (Debian's `prometheus` package) for tests: temp storage, an ephemeral loopback port, a 1 s
scrape interval, stopped when the block ends. Queries go through its HTTP API, as Argo Rollouts' provider sends them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

START_TIMEOUT_S = 60


@dataclass(frozen=True)
class LivePrometheus:
    url: str

    def query(self, promql: str) -> float:
        """The one value of an instant query that answers a one-element vector (NaN when it answers none)."""
        response = _http().get(f"{self.url}/api/v1/query", params={"query": promql})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", body
        result = body["data"]["result"]
        assert len(result) <= 1, f"{promql} answered {len(result)} series"
        return float(result[0]["value"][1]) if result else math.nan

    def wait_for(self, promql: str, condition: Callable[[float], bool], timeout_s: float, what: str) -> float:
        """Poll ``promql`` until its value meets ``condition`` (bounded): scrapes land on their own schedule."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.query(promql)
            if condition(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s} s for {what}; {promql} = {value}")
            time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def live_prometheus(
    workdir: Path, target: str, labels: Mapping[str, str], metrics_path: str
) -> Iterator[LivePrometheus]:
    """Prometheus scraping ``target`` (host:port) every second, each series labelled with ``labels``."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package provides the server (scripts/setup.sh installs it)"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "speech",
                "metrics_path": metrics_path,
                "static_configs": [{"targets": [target], "labels": dict(labels)}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("w"),
    )
    live = LivePrometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _is_ready(live.url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {(workdir / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield live
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@functools.cache
def _http() -> httpx.Client:
    """One client for every query and readiness poll: building one loads the CA bundle (about 40 ms of CPU)."""
    return httpx.Client(timeout=30)


def _is_ready(url: str) -> bool:
    try:
        return _http().get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
