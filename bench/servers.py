"""Speech servers as separate processes on loopback (``python -m serving``), for the load and failover drills.

A process of its own is what production runs: its own interpreter, GIL and event loop, so the bench's clients do not
share them with the server, and a region can be killed outright and started again on the same port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from contract.service import ENV_GRPC_PORT, READINESS_PATH, STREAM_PATH

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 600  # a first run builds the bundled model before it can be ready


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """One ``python -m serving`` with ``env`` (SPEECH_* settings) on a fixed loopback port across restarts."""

    name: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="speech-server-", suffix=".log")[1]))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{STREAM_PATH}"

    def start(self) -> ServerProcess:
        # gRPC on any free port: the fixed default would collide between regions, and with anything else running.
        env = {**os.environ, "PYTHONPATH": str(REPO), "SPEECH_LOG_LEVEL": "warning", ENV_GRPC_PORT: "0", **self.env}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving", "--port", str(self.port)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Block until ``/readyz`` answers 200; return the seconds it took. Raises with the server's log if it died."""
        started = time.monotonic()
        # One client for every poll: a new one per request builds a TLS context each time (tens of ms of CPU each,
        # seconds over a start-up on a loaded machine) that plain HTTP never uses.
        with httpx.Client(base_url=self.base_url, timeout=5) as http:
            while time.monotonic() - started < timeout_s:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"server {self.name} exited during start-up:\n{self.log.read_text()[-3000:]}")
                try:
                    if http.get(READINESS_PATH).status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"server {self.name} was not ready after {timeout_s:g} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """Stop at once, as a region that fails does: no drain, connections reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Stop as Kubernetes does (SIGTERM: drain, then exit); killed if it takes over a minute."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)
