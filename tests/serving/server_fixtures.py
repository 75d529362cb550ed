"""The real server on loopback: uvicorn running ``create_app(settings)`` in a thread, plus wire-level helpers.

Tests talk to it with httpx and websockets exactly as a client would; nothing is patched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.client
import io
import json
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit

import av
import httpx
import numpy as np
import pytest
import soundfile
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from contract import service
from serving.__main__ import ws_max_size
from serving.model_dir import MANIFEST_FILE
from serving.settings import ModelSettings, Settings
from serving.shutdown import DrainingServer

FRAME_SAMPLES = 320  # 20 ms at 16 kHz
READY_TIMEOUT_S = 600  # a first run exports the bundled model before it can become ready
# The guarded server's keys (see the ``guarded_server`` fixture): two transcription keys, one admin key.
ENV_KEY, FILE_KEY, ADMIN_KEY = "key-from-the-environment", "key-from-the-mounted-secret", "admin-key-for-reloads"
GUARDED_UPLOAD_IDLE_S = 1.0


class SharedStream(TypedDict):
    """The stream limits of the shared server, each with its own type (tests count and size with them)."""

    max_sessions: int
    idle_timeout_s: float
    max_frame_bytes: int


# The shared server's limits (see the ``shared_server`` fixture): no keys, small limits that tests run into.
SHARED_LIMITS = {"max_upload_bytes": 2_000_000, "max_queued_requests": 1, "max_audio_s": 60}
SHARED_STREAM: SharedStream = {"max_sessions": 2, "idle_timeout_s": 1.5, "max_frame_bytes": 3200}
SHARED_INFERENCE_THREADS = 2


@dataclass
class LiveServer:
    app: FastAPI
    base_url: str
    settings: Settings

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/v1/asr/stream"

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the app's gRPC API (bound when the app started)."""
        return f"127.0.0.1:{self.app.state.grpc.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=120, **({"verify": tls_context()} | kwargs))


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The default TLS context, built once for every test client: building one loads the CA bundle, about 35 ms of
    CPU, which each ``httpx.Client`` would pay again (loopback servers speak plain HTTP, so it is never used)."""
    return ssl.create_default_context()


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# How test servers decode (``server_model``), and the quick benches' servers (``decoding_env``): greedy, on windows
# fitted with 5 s of silence, on one intra-op thread.
TEST_DECODING: dict[str, Any] = {"beam_size": 1, "window_pad_s": 5.0, "threads": 1}


def decoding_env() -> dict[str, str]:
    """``TEST_DECODING`` as the ``SPEECH_MODEL__*`` variables of a ``python -m serving`` process."""
    return {f"SPEECH_MODEL__{field.upper()}": str(value) for field, value in TEST_DECODING.items()}


def server_model(cache_root: Path, profile: str = "base", **overrides: Any) -> ModelSettings:
    """The bundled ``profile`` from ``cache_root`` as a test server runs it, unless ``overrides`` say otherwise:
    batch requests decoded greedily on windows fitted with 5 s of silence, as stream finals are by default (server
    tests are about routes, formats, limits and versions; beam search and 30 s windows are tested on the engine, in
    ``test_beam.py`` and ``test_whisper_onnx.py``, and cost about 2x and 3x more behind every route), on one intra-op
    thread (the suite runs three workers on two cores)."""
    fields: dict[str, Any] = {"name": f"whisper-{profile}", "profile": profile, **TEST_DECODING}
    return ModelSettings(cache_dir=cache_root, **(fields | overrides))


# Fake credentials for the moto server (it accepts any), and objects kept in memory whatever their size: moto's
# default spills every object over 5 MB to a temporary file and reads the whole file back for each ranged GET the
# store client makes (16 MB ranges); in memory, the store tests took 7% less CPU. ``moto_store`` also stops the
# copy of the whole object that moto 5 still makes for each range (``_object_bytes``).
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(1 << 30),
}


@contextlib.contextmanager
def moto_store() -> Iterator[str]:
    """A moto S3 server on loopback, run by this process (``publish_in_moto`` writes into it), with ``MOTO_ENV`` set
    until the block ends; yields its endpoint URL."""
    from moto.s3.models import FakeKey
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        for variable, value in MOTO_ENV.items():
            env.setenv(variable, value)
        env.setattr(FakeKey, "value", property(_object_bytes, FakeKey.value.fset))
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def _object_bytes(key: Any) -> bytes:
    """A moto object's bytes as moto's ``FakeKey.value`` gives them, but without copying an in-memory object: moto
    reads its whole buffer into new bytes for every GET, ranged ones included (a range is sliced from that copy), so
    a 100 MB decoder fetched in 16 MB ranges was copied seven times, mostly kernel time on fresh pages. A pull of
    base took 1.2 CPU-s, and 0.6-0.7 this way (one unranged GET per file: 0.35)."""
    with key.lock:
        buffer = key._value_buffer
        if isinstance(getattr(buffer, "_file", None), io.BytesIO) and not buffer._rolled:
            return buffer._file.getvalue()  # CPython shares the bytes object it holds instead of copying it
        buffer.seek(0)
        return buffer.read()


def publish_in_moto(bucket: str, model_dir: Path, name: str, version: str, manifest_version: str | None = None) -> None:
    """``model_dir`` as ``models/<name>/<version>/`` in ``bucket`` of the moto server this process runs (a
    ``ThreadedMotoServer``), its manifest relabelled ``manifest_version`` (default: ``version``) and written last, as
    a publisher writes it. Into moto's backend rather than through the S3 API, which these stores' tests are not
    about (``tests/serving/test_publish.py`` is): a PutObject of a model over loopback costs about 0.9 CPU-s, a
    backend write 0.2."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    prefix = f"models/{name}/{version}/"
    for path in sorted(model_dir.iterdir()):
        if path.name != MANIFEST_FILE:
            backend.put_object(bucket, prefix + path.name, path.read_bytes(), etag=_md5_of(path))
    manifest = {**json.loads((model_dir / MANIFEST_FILE).read_bytes()), "version": manifest_version or version}
    backend.put_object(bucket, prefix + MANIFEST_FILE, json.dumps(manifest).encode())


@functools.cache
def _md5_of(path: Path) -> str:
    """A model file's ETag (its MD5, which moto would otherwise work out on each copy's first HEAD): once per file."""
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def local_settings(cache_root: Path, **overrides: Any) -> Settings:
    """Settings for a test server: ``server_model(cache_root)`` unless ``overrides`` say otherwise, gRPC on any free
    port (never the fixed default another run may hold), and no voice (the TTS tests ask for one), so ASR tests load
    only what they use."""
    model = overrides.pop("model", None) or server_model(cache_root)
    overrides.setdefault("grpc", {"port": 0})
    tts = overrides.pop("tts", None) or {"enabled": False}
    return Settings(model=model, tts=tts, **overrides)


@contextlib.contextmanager
def live_server(settings: Settings, *, wait_ready: bool = True, port: int = 0) -> Iterator[LiveServer]:
    """Serve ``create_app(settings)`` on loopback until the block ends: on ``port``, or a free one by default (a
    server restarted on the port it had is the same endpoint again, as a region coming back is)."""
    from serving.app import create_app

    app = create_app(settings)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", ws_max_size=ws_max_size(settings.stream.max_frame_bytes), timeout_graceful_shutdown=5
    )
    server = DrainingServer(config, app.state.serving)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    live = LiveServer(app, f"http://127.0.0.1:{port}", settings)
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 60, "uvicorn to start")
        if not thread.is_alive():
            raise RuntimeError("the server stopped during start-up; see the log above")
        if wait_ready:
            wait_ready_or_fail(live)
        yield live
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


@functools.cache
def loopback_http() -> httpx.Client:
    """One client for the helpers' own plain-HTTP calls (readiness polls, scrapes): building a client loads the CA
    bundle, about 40 ms of CPU, which a poll every 0.1 s would pay each time."""
    return httpx.Client(timeout=10, verify=tls_context())


def wait_ready_or_fail(live: LiveServer) -> None:
    def is_ready() -> bool:
        response = loopback_http().get(live.base_url + "/readyz")
        if response.json().get("status") == "failed":
            raise RuntimeError(f"the model failed to load: {response.json()['detail']}")
        return response.status_code == 200

    wait_until(is_ready, READY_TIMEOUT_S, "/readyz")


def wait_process_ready(process: subprocess.Popen[str], base_url: str, timeout_s: float = 300) -> None:
    """Poll a ``python -m serving`` subprocess's ``/readyz`` until it answers 200; fail with the end of its output
    (``stdout=PIPE``, stderr merged) if it exits first, or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"not ready within {timeout_s:g} s"
        try:
            if loopback_http().get(base_url + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s} s for {what}")
        time.sleep(0.1)


def wav_bytes(audio: np.ndarray, rate: int = 16_000, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def opus_packets(audio: np.ndarray, bitrate: int = 16_000) -> list[bytes]:
    """16 kHz mono audio as 20 ms Opus packets (VoIP mode, as a phone would send them), encoded by the libopus that
    PyAV bundles: the library the server decodes with."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format, encoder.bit_rate = 16_000, "mono", "s16", bitrate
    encoder.options = {"frame_duration": "20", "application": "voip"}
    samples = np.frombuffer(pcm16(audio), "<i2")
    packets: list[bytes] = []
    for at in range(0, len(samples), FRAME_SAMPLES):
        chunk = samples[at : at + FRAME_SAMPLES]
        block = av.AudioFrame.from_ndarray(np.pad(chunk, (0, FRAME_SAMPLES - len(chunk)))[None], "s16", "mono")
        block.sample_rate, block.pts = 16_000, at
        packets += [bytes(packet) for packet in encoder.encode(block)]
    return packets + [bytes(packet) for packet in encoder.encode(None)]


def with_silence(audio: np.ndarray, before_s: float = 0.5, after_s: float = 1.2) -> np.ndarray:
    """Speech padded so the VAD sees it start and, after enough trailing silence, end."""
    return np.concatenate([silence(before_s), audio, silence(after_s)])


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16_000), dtype=np.float32)


@dataclass
class StreamOutcome:
    ready: dict
    messages: list[dict] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def final_text(self) -> str:
        return " ".join(m["text"] for m in self.of_type("final")).strip()


async def stream_audio(
    url: str,
    audio: np.ndarray,
    *,
    realtime: float | None = 1.0,
    headers: dict[str, str] | None = None,
    timeout_s: float = 120,
    one_second_in: asyncio.Future | None = None,
    then: tuple[asyncio.Future, np.ndarray] | None = None,
    frame_bytes: int = FRAME_SAMPLES * 2,
) -> StreamOutcome:
    """Send ``audio`` in frames of ``frame_bytes`` (20 ms by default), paced at ``realtime`` x real time (None: as
    fast as the server takes them), then ``stop``, and collect everything the server says until it closes.

    ``one_second_in`` is resolved after the first second of audio. ``then`` = (event, more audio): after ``audio``,
    keep sending silence in real time until the event resolves, then send the further audio, all in one stream.
    """
    async with asyncio.timeout(timeout_s):
        async with connect(url, additional_headers=headers, max_size=2**20) as ws:
            outcome = StreamOutcome(ready=json.loads(await ws.recv()))
            receiver = asyncio.create_task(_collect(ws, outcome))
            await _send_frames(ws, pcm16(audio), realtime, one_second_in, frame_bytes)
            if then is not None:
                event, more = then
                while not event.done():
                    await ws.send(pcm16(silence(0.02)))
                    await asyncio.sleep(0.02)
                await _send_frames(ws, pcm16(more), realtime, None, frame_bytes)
            await ws.send(json.dumps({"type": "stop"}))
            await receiver
            return outcome


async def stream_messages(
    url: str,
    messages: list[bytes | str],
    *,
    frame_s: float = 0.02,
    realtime: float | None = 1.0,
    timeout_s: float = 120,
) -> StreamOutcome:
    """Send ``messages`` in order, binary ones (each ``frame_s`` of audio, e.g. Opus packets) paced at ``realtime``
    x real time and text ones (control messages such as flush) at once, then ``stop``; collect what comes back."""
    async with asyncio.timeout(timeout_s):
        async with connect(url, max_size=2**20) as ws:
            outcome = StreamOutcome(ready=json.loads(await ws.recv()))
            receiver = asyncio.create_task(_collect(ws, outcome))
            started, sent_s = time.monotonic(), 0.0
            for message in messages:
                await ws.send(message)
                if isinstance(message, bytes):
                    sent_s += frame_s
                if realtime and (lag := started + sent_s / realtime - time.monotonic()) > 0:
                    await asyncio.sleep(lag)
            await ws.send(json.dumps({"type": "stop"}))
            await receiver
            return outcome


async def _send_frames(
    ws: ClientConnection, data: bytes, realtime: float | None, marker: asyncio.Future | None, step: int
) -> None:
    started = time.monotonic()
    for offset in range(0, len(data), step):
        await ws.send(data[offset : offset + step])
        sent_s = (offset + step) / 32_000
        if realtime:
            lag = started + sent_s / realtime - time.monotonic()
            if lag > 0:
                await asyncio.sleep(lag)
        if marker is not None and not marker.done() and sent_s >= 1.0:
            marker.set_result(None)


async def _collect(ws: ClientConnection, outcome: StreamOutcome) -> None:
    try:
        async for message in ws:
            outcome.messages.append(json.loads(message))
    except ConnectionClosed:
        pass
    outcome.close_code = ws.close_code
    outcome.close_reason = ws.close_reason or ""


async def close_of(
    url: str, send: Sequence[bytes | str] = (), headers: dict[str, str] | None = None
) -> tuple[int | None, str, list[dict]]:
    """Connect, send ``send``, and return the close code, reason and the messages received before it."""
    messages: list[dict] = []
    async with asyncio.timeout(60):
        async with connect(url, additional_headers=headers, max_size=2**20) as ws:
            try:
                for item in send:
                    await ws.send(item)
                async for message in ws:
                    messages.append(json.loads(message))
            except ConnectionClosed:
                pass
            return ws.close_code, ws.close_reason or "", messages


def scrape(base_url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample /metrics exposes, keyed by name and label set."""
    text = loopback_http().get(base_url + "/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict[tuple[str, frozenset], float], metric: str, /, **labels: str) -> float:
    key = (metric, frozenset(labels.items()))
    if key not in samples:
        raise AssertionError(
            f"no sample {metric}{labels}; have {sorted(n for n, _ in samples if n.startswith(metric))}"
        )
    return samples[key]


def decodes(base_url: str, kind: str) -> float:
    """How many decodes of ``kind`` (batch, partial, final, speculative, ...) the server has counted, all models."""
    return sum(
        value
        for (name, labels), value in scrape(base_url).items()
        if name == f"{service.METRIC_INFERENCE_DURATION}_count" and ("kind", kind) in labels
    )


def start_upload(
    base_url: str,
    path: str,
    sent: bytes,
    *,
    declared: int | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    timeout_s: float = 60,
) -> http.client.HTTPConnection:
    """Send a request's headers (``Content-Length: declared``, default ``len(sent)``) and ``sent`` of its body,
    and leave the connection open: the rest of the body may never come. Read the answer with :func:`answer_of`."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.netloc, timeout=timeout_s)
    connection.putrequest(method, path)
    for name, value in (headers or {}).items():
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(sent) if declared is None else declared))
    connection.endheaders(sent or None)
    return connection


def answer_of(connection: http.client.HTTPConnection) -> tuple[int, dict]:
    """The status and JSON body the server answered on ``connection`` (waits up to its timeout)."""
    with contextlib.closing(connection):
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
