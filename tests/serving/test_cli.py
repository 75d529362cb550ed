"""``python -m serving`` on this machine: starts uvicorn with the bundled model and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def test_python_m_serving_serves_the_bundled_model_and_stops_on_sigterm(bundled_model_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECH_")}
    env["SPEECH_MODEL_CACHE"] = str(bundled_model_dir.parents[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "not ready within 300 s"
            try:
                if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        assert httpx.get(base + "/v1/models").json()["current"]["source"] == "bundled"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status still says SIGTERM.
    assert process.returncode in (0, -signal.SIGTERM), output[-3000:]
    assert "Application shutdown complete." in output
