"""``python -m serving`` on this machine: serves the bundled model, and on SIGTERM drains before it exits.

The drain is tested on a real process with a real signal, because what it protects against is uvicorn's own
shutdown, which closes every WebSocket with 1012 the moment the signal arrives.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.serving.server_fixtures import (
    answer_of,
    close_of,
    pcm16,
    sample,
    scrape,
    start_upload,
    wait_process_ready,
    wav_bytes,
)

REPO = Path(__file__).resolve().parents[2]
SPOKEN = "Please call Stella and ask her to bring these things with her from the store."
UPLOADED = "The juice of lemons makes fine punch."


@pytest.fixture
def server_process(tiny_en_model_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECH_")}
    env |= {
        "SPEECH_MODEL_CACHE": str(tiny_en_model_dir.parents[1]),
        "SPEECH_MODEL__PROFILE": "tiny.en",  # the quickest to load: this is about the process, not accuracy
        "SPEECH_MODEL__THREADS": "1",  # as every test server: the suite runs three workers on two cores
        "SPEECH_TTS__ENABLED": "false",
        "SPEECH_SHUTDOWN__GRACE_S": "120",
        "SPEECH_LIMITS__UPLOAD_IDLE_TIMEOUT_S": "120",
        "SPEECH_GRPC__PORT": "0",  # any free port: never a fixed one other test runs may hold
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_process_ready(process, base)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_sigterm_drains_streams_and_requests_then_exits(server_process, synthesize):
    process, base = server_process
    assert httpx.get(base + "/v1/models").json()["current"]["source"] == "bundled"
    ws_url = base.replace("http://", "ws://") + "/v1/asr/stream"
    upload = wav_bytes(synthesize(UPLOADED, engine="flite"))

    async def scenario():
        async with connect(ws_url) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            speech = pcm16(synthesize(SPOKEN, engine="flite"))  # no trailing silence: the utterance stays open
            for offset in range(0, len(speech), 640):
                await ws.send(speech[offset : offset + 640])
            while (partial := json.loads(await ws.recv()))["type"] != "partial":
                pass
            in_flight = start_upload(base, "/v1/asr", upload[:-1], declared=len(upload))
            while sample(scrape(base), "speech_batch_requests_in_flight", region="local") < 1:
                await asyncio.sleep(0.05)  # the server has taken the upload's queue slot
            process.send_signal(signal.SIGTERM)
            messages = []
            try:
                async for message in ws:
                    messages.append(json.loads(message))
            except ConnectionClosed:
                pass
            closed = (ws.close_code, ws.close_reason)
        async with httpx.AsyncClient(base_url=base) as http:
            ready = await http.get("/readyz")
            refused_batch = await http.post("/v1/asr", content=upload)
        refused_stream = await close_of(ws_url)
        in_flight.send(upload[-1:])
        return partial, messages, closed, ready, refused_batch, refused_stream, answer_of(in_flight)

    partial, messages, closed, ready, refused_batch, refused_stream, (status, answer) = asyncio.run(scenario())
    # The final covers the audio taken when the signal came: how much of the sentence that is depends on timing,
    # but it starts where the speech starts and reaches at least as far as the partial already did.
    finals = [m for m in messages if m["type"] == "final"]
    assert len(finals) == 1 and finals[0]["text"].lower().startswith("please"), messages
    assert finals[0]["end_s"] >= partial["end_s"]
    assert closed == (1001, "server is shutting down")
    assert messages[-1]["type"] == "error" and "every final of the audio it took was sent" in messages[-1]["detail"]
    assert (ready.status_code, ready.json()["status"]) == (503, "draining")
    assert refused_batch.status_code == 503 and "shutting down" in refused_batch.json()["detail"]
    assert refused_stream[:2] == (1013, "server is shutting down; reconnect")
    assert status == 200 and "juice of lemons" in answer["text"].lower(), "the request in flight was finished"
    output, _ = process.communicate(timeout=120)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status still says SIGTERM.
    assert process.returncode in (0, -signal.SIGTERM), output[-3000:]
    assert "drained: no stream or batch request is left" in output
    assert "Application shutdown complete." in output
