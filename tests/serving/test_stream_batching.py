"""Concurrent streams' decodes batched together: the engine gives each recording in a batch the transcript it gives
alone (drafts of different lengths included, whose padded audio the decoder masks), and the inference pool batches
only what queued while its threads were busy, never across kinds, languages or engine versions, skips a decode
whose stream stopped waiting, and tells every stream of a batch that failed. What batching buys is measured by
``python -m bench.streams``."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import soundfile as sf

from serving.engine import DecodeOptions, Transcription
from serving.inference import InferencePool
from serving.model_dir import SPEECH_CLIP
from serving.whisper_onnx import WhisperOnnxEngine

GREEDY = DecodeOptions(beam_size=1)


@pytest.fixture(scope="module")
def recordings(synthesize) -> list[np.ndarray]:
    """Four recordings of different lengths, so drafts encode different numbers of frames."""
    speech, _ = sf.read(SPEECH_CLIP, dtype="float32")
    return [
        speech,
        synthesize("Glue the sheet to the dark blue background.", voice="en-us+m3"),
        speech[: len(speech) // 2],
        synthesize("The birch canoe slid on the smooth planks."),
    ]


@pytest.fixture(scope="module")
def alone(tiny_en_engine, recordings) -> dict[bool, list[Transcription]]:
    """Each recording transcribed on its own, as a final (False) and as a draft (True): what every batch and pool
    result here must equal. Decoded once for the module; each is a call of its own, never part of a batch."""
    return {
        draft: [tiny_en_engine.transcribe(audio, "en", draft=draft, options=GREEDY) for audio in recordings]
        for draft in (False, True)
    }


@pytest.mark.parametrize("draft", [False, True], ids=["finals", "drafts"])
def test_each_recording_of_a_batch_gets_the_transcript_it_gets_alone(tiny_en_engine, recordings, alone, draft):
    together = tiny_en_engine.transcribe_batch(recordings, "en", draft=draft, options=GREEDY)
    assert [t.text for t in together] == [a.text for a in alone[draft]]
    assert [t.segments for t in together] == [a.segments for a in alone[draft]]  # scores and times too
    assert len({t.text for t in together}) == len(recordings), "every recording has its own words"
    assert "smooth" in together[3].text.lower(), together[3].text


def test_a_batch_without_a_language_detects_each_recordings_own(tiny_en_engine, recordings, alone):
    results = tiny_en_engine.transcribe_batch(recordings[:2], None, options=GREEDY)
    assert [r.language for r in results] == ["en", "en"]
    assert [r.text for r in results] == [a.text for a in alone[False][:2]]


class CountingEngine:
    """The real engine; records the size of each batch it is asked for, and can hold the first call until told."""

    def __init__(self, inner: WhisperOnnxEngine, fail: bool = False) -> None:
        self.inner = inner
        self.batches: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def transcribe_batch(self, audios, language=None, *, draft=False, prefix="", options=None):
        self.batches.append(len(audios))
        self.started.set()
        assert self.release.wait(30), "the test never released the engine"
        if self.fail:
            raise RuntimeError("decoder out of memory")
        return self.inner.transcribe_batch(audios, language, draft=draft, prefix=prefix, options=options)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


async def _queued_behind_a_busy_thread(pool: InferencePool, engine: CountingEngine, first, rest) -> list:
    """Start ``first`` (a coroutine factory's call) and, once the only thread is busy with it, queue ``rest``."""
    leader = asyncio.create_task(first())
    await asyncio.to_thread(engine.started.wait, 30)
    followers = [asyncio.create_task(call()) for call in rest]
    await asyncio.sleep(0)  # every follower has queued its decode
    engine.release.set()
    return await asyncio.gather(leader, *followers, return_exceptions=True)


def test_decodes_that_queue_while_the_thread_is_busy_go_as_one_batch_of_their_kind(tiny_en_engine, recordings, alone):
    counting = CountingEngine(tiny_en_engine)
    pool = InferencePool(1)

    def decode(audio, *, draft=False, language="en"):
        return lambda: pool.transcribe(counting, audio, language, draft=draft, options=GREEDY)

    async def scenario():
        return await _queued_behind_a_busy_thread(
            pool,
            counting,
            decode(recordings[0]),
            [
                decode(recordings[1]),
                decode(recordings[2], draft=True),
                decode(recordings[3]),
                decode(recordings[2], draft=True),
            ],
        )

    results = asyncio.run(scenario())
    pool.shutdown()
    # Alone (a free thread), then the two finals together, then the two drafts together.
    assert counting.batches == [1, 2, 2]
    finals, drafts = alone[False], alone[True]
    assert [r.text for r in results] == [finals[0].text, finals[1].text, drafts[2].text, finals[3].text, drafts[2].text]


def test_other_versions_and_languages_are_never_batched_together(tiny_en_engine, recordings):
    counting, other = CountingEngine(tiny_en_engine), CountingEngine(tiny_en_engine)
    other.release.set()
    pool = InferencePool(1)

    async def scenario():
        return await _queued_behind_a_busy_thread(
            pool,
            counting,
            lambda: pool.transcribe(counting, recordings[0], "en", options=GREEDY),
            [
                lambda: pool.transcribe(counting, recordings[1], "en", options=GREEDY),
                lambda: pool.transcribe(other, recordings[1], "en", options=GREEDY),  # a swapped-in version
                lambda: pool.transcribe(counting, recordings[1], "en", options=DecodeOptions(beam_size=2)),
                lambda: pool.transcribe(counting, recordings[1], "en", draft=True, prefix="Glue the"),
                lambda: pool.transcribe(counting, recordings[1], "en", draft=True),
                lambda: pool.transcribe(counting, recordings[1], "fr", options=GREEDY),  # tiny.en refuses French
            ],
        )

    results = asyncio.run(scenario())
    pool.shutdown()
    *decoded, french = results
    assert all(not isinstance(r, BaseException) for r in decoded), decoded
    assert isinstance(french, ValueError) and "'fr' is not supported" in str(french), french
    assert counting.batches == [1, 1, 1, 1, 1, 1] and other.batches == [1]
    assert decoded[4].text.startswith("Glue the"), decoded[4].text


def test_a_decode_whose_stream_stopped_waiting_is_skipped(tiny_en_engine, recordings):
    counting = CountingEngine(tiny_en_engine)
    pool = InferencePool(1)

    async def scenario():
        leader = asyncio.create_task(pool.transcribe(counting, recordings[0], "en", options=GREEDY))
        await asyncio.to_thread(counting.started.wait, 30)
        gone = asyncio.create_task(pool.transcribe(counting, recordings[1], "en", options=GREEDY))
        kept = asyncio.create_task(pool.transcribe(counting, recordings[3], "en", options=GREEDY))
        await asyncio.sleep(0)
        gone.cancel()  # the stream closed while its final waited for a thread
        counting.release.set()
        return await asyncio.gather(leader, kept), gone

    (_, last), gone = asyncio.run(scenario())
    pool.shutdown()
    assert gone.cancelled()
    assert counting.batches == [1, 1], "only the decode still awaited was run"
    assert "smooth" in last.text.lower(), last.text


def test_a_failed_batch_fails_every_stream_in_it_and_the_pool_keeps_serving(tiny_en_engine, recordings):
    failing = CountingEngine(tiny_en_engine, fail=True)
    pool = InferencePool(1)

    async def scenario():
        outcomes = await _queued_behind_a_busy_thread(
            pool,
            failing,
            lambda: pool.transcribe(failing, recordings[0], "en", options=GREEDY),
            [lambda audio=audio: pool.transcribe(failing, audio, "en", options=GREEDY) for audio in recordings[1:]],
        )
        failing.fail = False
        after = await pool.transcribe(failing, recordings[3], "en", options=GREEDY)
        return outcomes, after

    outcomes, after = asyncio.run(scenario())
    pool.shutdown()
    assert failing.batches[:2] == [1, 3]
    assert all(isinstance(o, RuntimeError) and "out of memory" in str(o) for o in outcomes), outcomes
    assert "smooth" in after.text.lower(), after.text
