"""The streaming session on its own, driven frame by frame with the real engine and VAD: pacing, shedding partials
under overload, finals that survive backpressure, the VAD off the event loop, and empty finals for silence."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import numpy as np
import pytest

from serving.audio import pcm16_to_float
from serving.engine import DecodeOptions
from serving.inference import InferencePool
from serving.metrics import ServingMetrics
from serving.registry import EngineLease, EngineRegistry, ModelInfo
from serving.settings import StreamSettings
from serving.stream_control import AudioPacer
from serving.streaming import PREROLL_SAMPLES, StreamSession
from serving.vad import WINDOW, SileroSequence, SileroVad, VadStream
from serving.whisper_onnx import WhisperOnnxEngine
from tests.serving.server_fixtures import pcm16, silence, with_silence

FIRST = "Please call Stella and ask her to bring these things with her from the store."
SECOND = "Can you turn off the lights in the kitchen before you leave?"
THIRD = "The birch canoe slid on the smooth planks."
FRAME = 640  # 20 ms of PCM16


@pytest.fixture(scope="module")
def silero() -> SileroVad:
    return SileroVad()


@pytest.fixture
def lease(tiny_en_engine) -> Iterator[EngineLease]:
    """A lease on the module's engine; the registry is never closed, so the engine outlives the test."""
    registry: EngineRegistry[WhisperOnnxEngine] = EngineRegistry()
    registry.swap(tiny_en_engine, ModelInfo(tiny_en_engine.name, tiny_en_engine.version, "bundled"))
    with registry.acquire() as held:
        yield held


class Harness:
    """A session with its own pools and metrics; ``messages`` collects what it would send."""

    def __init__(self, lease: EngineLease, vad: VadStream, settings: StreamSettings, threads: int = 1) -> None:
        self.inference = InferencePool(threads)
        self.vad_pool = ThreadPoolExecutor(1, thread_name_prefix="vad")
        self.metrics = ServingMetrics("local")
        self.session = StreamSession(lease, vad, settings, self.inference, self.vad_pool, self.metrics, "en")
        self.messages: list[dict] = []

    async def send(self, message: dict) -> None:
        self.messages.append(message)

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    def count(self, metric: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(metric, {"region": "local", **labels})
        return value or 0.0

    def close(self) -> None:
        self.inference.shutdown()
        self.vad_pool.shutdown()


def frames_of(audio: np.ndarray) -> list[bytes]:
    data = pcm16(audio)
    return [data[at : at + FRAME] for at in range(0, len(data), FRAME)]


async def wait_for(condition, timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def test_the_pacer_takes_a_burst_then_audio_at_its_factor_and_never_delays_a_real_time_client():
    now = [0.0]
    pacer = AudioPacer(factor=3.0, burst_s=2.0, clock=lambda: now[0])
    accepted = 0.0
    while now[0] < 10.0:  # a client with 20 ms frames that sends the moment it may
        now[0] += pacer.delay()
        pacer.consume(0.02)
        accepted += 0.02
    assert accepted == pytest.approx(2.0 + 3.0 * 10.0, abs=0.021), "burst plus factor x elapsed, one frame over"

    real_time = AudioPacer(factor=3.0, burst_s=2.0, clock=lambda: now[0])
    for _ in range(1000):
        assert real_time.delay() == 0.0
        real_time.consume(0.02)
        now[0] += 0.02


def test_partials_are_shed_while_every_inference_thread_is_busy_and_the_final_still_comes(lease, silero, synthesize):
    speech = with_silence(synthesize(FIRST, engine="flite"), after_s=0.0)  # the utterance stays open

    async def scenario(harness: Harness) -> int:
        busy = threading.Event()
        occupant = asyncio.create_task(harness.inference.run(busy.wait))  # holds the only inference thread
        runner = asyncio.create_task(harness.session.run(harness.send))
        for frame in frames_of(speech):
            assert await harness.session.put_frame(frame)
        await wait_for(lambda: harness.count("speech_partials_dropped_total", **_version(lease), reason="overload"))
        sent_while_busy = len(harness.messages)
        busy.set()
        await occupant
        harness.session.end_input()
        await runner
        return sent_while_busy

    harness = Harness(lease, silero.stream(0.5, 600), StreamSettings())
    try:
        sent_while_busy = asyncio.run(scenario(harness))
    finally:
        harness.close()
    assert sent_while_busy == 0, "no partial was decoded while the pool was saturated"
    finals = harness.of_type("final")
    assert len(finals) == 1 and "stella" in finals[0]["text"].lower(), harness.messages


def test_a_client_held_back_too_long_still_gets_every_final_of_the_audio_taken(lease, silero, synthesize):
    """The old failure: with a short backpressure timeout the stream closed 1013 with zero finals.

    Where the session holds the client back depends on the machine's speed (usually once the third utterance ends,
    with two finals waiting; under load, sooner), so the expected finals come from the VAD run over the audio the
    session took."""
    audio = np.concatenate([with_silence(synthesize(text, engine="flite")) for text in (FIRST, SECOND, THIRD)])
    settings = StreamSettings(backpressure_timeout_s=0.5, inbound_queue_frames=2, max_pending_finals=1)

    async def scenario(harness: Harness) -> int:
        busy = threading.Event()
        occupant = asyncio.create_task(harness.inference.run(busy.wait))
        runner = asyncio.create_task(harness.session.run(harness.send))
        taken = 0
        for frame in frames_of(audio):
            if not await harness.session.put_frame(frame):
                break
            taken += 1
        harness.session.end_input()
        busy.set()
        await occupant
        await runner
        return taken

    harness = Harness(lease, silero.stream(0.5, 600), settings)
    try:
        taken = asyncio.run(scenario(harness))
    finally:
        harness.close()
    frames = frames_of(audio)
    assert taken < len(frames), "with every decode blocked, the session stopped taking audio"
    events = silero.stream(0.5, 600).feed(pcm16_to_float(b"".join(frames[:taken])))
    started = [e for e in events if e.kind == "start"]
    ended = [e for e in events if e.kind == "end"]
    finals = harness.of_type("final")
    assert [f["utterance"] for f in finals] == list(range(len(started))), (taken, harness.messages)
    assert all(f["text"] for f in finals[: len(ended)]), finals


def test_the_vad_runs_on_its_own_thread_not_the_event_loop(lease, silero, synthesize):
    class RecordingVad:
        def __init__(self, inner: VadStream) -> None:
            self.inner = inner
            self.threads: set[str] = set()

        def feed(self, audio: np.ndarray) -> list:
            self.threads.add(threading.current_thread().name)
            return self.inner.feed(audio)

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

    vad = RecordingVad(silero.stream(0.5, 600))

    async def scenario(harness: Harness) -> None:
        runner = asyncio.create_task(harness.session.run(harness.send))
        for frame in frames_of(with_silence(synthesize(THIRD, engine="flite"))):
            assert await harness.session.put_frame(frame)
        harness.session.end_input()
        await runner

    # A stand-in for the VadStream it wraps: it records feed's thread and forwards everything else.
    harness = Harness(lease, cast(VadStream, vad), StreamSettings())
    try:
        asyncio.run(scenario(harness))
    finally:
        harness.close()
    assert vad.threads == {"vad_0"}
    assert "smooth planks" in " ".join(f["text"] for f in harness.of_type("final")).lower()


def test_an_utterance_cut_where_the_speech_had_already_ended_gets_an_empty_final_without_a_decode(
    lease, silero, synthesize
):
    audio = np.concatenate([synthesize(THIRD, engine="flite"), silence(2.0)])
    probe = silero.stream(0.5, 600)
    start = next(event.sample for event in probe.feed(audio) if event.kind == "start")
    utterance_start = max(start - PREROLL_SAMPLES, 0)
    cut = probe.last_speech_end + 1600  # 100 ms into the silence, well before the VAD ends the utterance
    settings = StreamSettings(max_utterance_s=(cut - utterance_start) / 16_000, max_frame_bytes=len(audio) * 2)

    async def scenario(harness: Harness) -> None:
        runner = asyncio.create_task(harness.session.run(harness.send))
        # Two frames of over a second each: the session steps through each whole, so the cut falls in the first.
        first, rest = pcm16(audio[: cut + 320]), pcm16(audio[cut + 320 :])
        assert await harness.session.put_frame(first) and await harness.session.put_frame(rest)
        harness.session.end_input()
        await runner

    harness = Harness(lease, silero.stream(0.5, 600), settings)
    try:
        asyncio.run(scenario(harness))
    finally:
        harness.close()
    finals = harness.of_type("final")
    assert len(finals) == 2, harness.messages
    assert "smooth planks" in finals[0]["text"].lower() and finals[1]["text"] == "", finals
    assert (
        harness.count("speech_inference_duration_seconds_count", **_version(lease), model=lease.info.name, kind="final")
        == 1
    )


def _version(lease: EngineLease) -> dict[str, str]:
    return {"model_version": lease.info.version}


class RecordingEngine:
    """The real engine, recording the prefix of each draft and counting full decodes (streams decode in batches)."""

    def __init__(self, inner: WhisperOnnxEngine) -> None:
        self.inner = inner
        self.prefixes: list[str] = []
        self.full_decodes = 0
        self.final_options: list[DecodeOptions | None] = []

    def transcribe_batch(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        *,
        draft: bool = False,
        prefix: str = "",
        options: DecodeOptions | None = None,
    ):
        if draft:
            self.prefixes += [prefix] * len(audios)
        else:
            self.full_decodes += len(audios)
            self.final_options += [options] * len(audios)
        return self.inner.transcribe_batch(audios, language, draft=draft, prefix=prefix, options=options)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@pytest.fixture
def recording(tiny_en_engine) -> Iterator[tuple[RecordingEngine, EngineLease]]:
    engine = RecordingEngine(tiny_en_engine)
    registry: EngineRegistry[RecordingEngine] = EngineRegistry()
    registry.swap(engine, ModelInfo(engine.name, engine.version, "bundled"))
    with registry.acquire() as held:
        yield engine, held


async def feed(session: StreamSession, audio: np.ndarray) -> None:
    for frame in frames_of(audio):
        assert await session.put_frame(frame)


def test_committed_words_never_change_in_later_partials_and_drafts_decode_only_after_them(
    recording, silero, synthesize
):
    engine, lease = recording
    speech = np.concatenate([silence(0.5), synthesize(f"{FIRST} {SECOND} {THIRD}", engine="flite")])  # 11 s, no pause
    heard = np.flatnonzero(SileroSequence().probabilities(speech) >= 0.5)  # the windows the stream's VAD hears
    spoken_until = (int(heard[-1]) + 1) * WINDOW

    async def scenario(harness: Harness) -> None:
        session = harness.session
        runner = asyncio.create_task(session.run(harness.send))
        # The VAD hears the speech start after about 1.1 s. From then on each step is one partial interval (which
        # grows while drafts are slow) and yields one partial however slow the machine: none is superseded or shed.
        # Steps stop where the speech does: the silence after it gets no draft.
        fed, at = 0, 24_000
        while at <= spoken_until:
            sent = len(harness.of_type("partial"))
            await feed(session, speech[fed:at])
            await wait_for(lambda sent=sent: len(harness.of_type("partial")) > sent)
            fed, at = at, at + max(8_000, round(session.partial_interval_s * 16_000) + 320)
        await feed(session, speech[fed:])
        session.end_input()
        await runner

    settings = StreamSettings(partial_interval_ms=300, partial_duty=1.0, partial_prefix=True)
    harness = Harness(lease, silero.stream(0.5, 600), settings)
    try:
        asyncio.run(scenario(harness))
    finally:
        harness.close()
    partials = harness.of_type("partial")
    assert len(partials) >= 3 and all(p["utterance"] == 0 for p in partials), harness.messages
    for earlier, later in itertools.pairwise(partials):
        assert later["committed"].startswith(earlier["committed"]), (earlier, later)
    assert all(p["text"].startswith(p["committed"]) for p in partials), partials
    assert len(partials[-1]["committed"].split()) >= 2, f"drafts hardly agreed: {[p['text'] for p in partials]}"
    assert engine.prefixes == ["", *(p["committed"] for p in partials[:-1])], (
        "each draft was forced to what was settled"
    )


def test_a_flush_ends_the_utterance_now_and_its_final_comes_before_any_silence(lease, silero, synthesize):
    speech = np.concatenate([silence(0.5), synthesize(THIRD, engine="flite")])  # no pause: the VAD never ends it

    async def scenario(harness: Harness) -> list[dict]:
        runner = asyncio.create_task(harness.session.run(harness.send))
        await feed(harness.session, speech)
        assert await harness.session.flush()
        await wait_for(lambda: harness.of_type("final"))
        finals_before_stop = harness.of_type("final")
        harness.session.end_input()
        await runner
        return finals_before_stop

    harness = Harness(lease, silero.stream(0.5, 600), StreamSettings())
    try:
        finals = asyncio.run(scenario(harness))
    finally:
        harness.close()
    assert len(finals) == 1 and "smooth planks" in finals[0]["text"].lower(), harness.messages
    assert finals[0]["end_s"] == pytest.approx(len(speech) / 16_000, abs=0.02), "cut where the audio taken ends"
    assert [f["utterance"] for f in harness.of_type("final")] == [0], "nothing was left open to finalise at stop"


def test_no_partial_is_drafted_of_the_silence_after_the_speech(lease, silero, synthesize):
    """A draft of the pause repeats the last partial and would run ahead of the final; the session drafts only
    audio with speech the last partial did not have, and nothing once the speaker has paused."""
    speech = np.concatenate([silence(0.5), synthesize(SECOND, engine="flite")])
    queued: list[tuple[int, int]] = []  # (audio end, end of the speech heard) of every partial the session queued

    async def scenario(harness: Harness) -> None:
        session = harness.session
        queue = session._queue_partial

        def spy(start: int, end: int) -> None:
            queued.append((end, session._vad.last_speech_end))
            queue(start, end)

        session._queue_partial = spy  # type: ignore[method-assign]
        runner = asyncio.create_task(session.run(harness.send))
        # 2 s of silence, and the utterance stays open (3 s end silence): without the rule, 20 drafts of silence.
        await feed(session, np.concatenate([speech, silence(2.0)]))
        session.end_input()
        await runner

    settings = StreamSettings(partial_interval_ms=100, end_silence_ms=3000, speculative_final_ms=200)
    harness = Harness(lease, silero.stream(0.5, 3000, 200), settings)
    try:
        asyncio.run(scenario(harness))
    finally:
        harness.close()
    assert queued, "the sentence got partials while it was spoken"
    assert all(end - heard < 3200 for end, heard in queued), [(e / 16_000, h / 16_000) for e, h in queued]
    assert "kitchen" in harness.of_type("final")[0]["text"].lower(), harness.messages


def test_a_final_decoded_when_the_speaker_paused_is_sent_without_decoding_again(recording, silero, synthesize):
    engine, lease = recording
    speech = np.concatenate([silence(0.5), synthesize(SECOND, engine="flite")])
    version = _version(lease)

    async def scenario(harness: Harness) -> None:
        runner = asyncio.create_task(harness.session.run(harness.send))
        # The clip ends in 0.3 s of silence: with 0.05 s more, past the 0.2 s pause and short of the 0.6 s end.
        await feed(harness.session, np.concatenate([speech, silence(0.05)]))
        await wait_for(lambda: engine.full_decodes == 1)
        await feed(harness.session, silence(1.0))
        await wait_for(lambda: harness.of_type("final"))
        harness.session.end_input()
        await runner

    settings = StreamSettings(partial_interval_ms=10_000, speculative_final_ms=200)
    harness = Harness(lease, silero.stream(0.5, 600, 200), settings)
    try:
        asyncio.run(scenario(harness))
    finally:
        harness.close()
    finals = harness.of_type("final")
    assert len(finals) == 1 and "kitchen" in finals[0]["text"].lower(), harness.messages
    assert engine.full_decodes == 1, "the final was not decoded again"
    # Finals are latency-bound: greedy, on a window fitted to the utterance plus 5 s, by default.
    assert engine.final_options == [DecodeOptions(beam_size=1, window_pad_s=5.0)]
    assert harness.count("speech_speculative_finals_total", **version, outcome="used") == 1
    assert harness.count("speech_inference_duration_seconds_count", **version, model=lease.info.name, kind="final") == 1
