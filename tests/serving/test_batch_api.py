"""POST /v1/asr, probes, /v1/models and /metrics against the real server on loopback with the bundled model."""

from __future__ import annotations

import concurrent.futures
import itertools

import numpy as np
import pytest
import soxr

from serving.bundled import MODEL_VERSION
from tests.serving.server_fixtures import (
    SHARED_INFERENCE_THREADS,
    SHARED_LIMITS,
    answer_of,
    pcm16,
    sample,
    scrape,
    silence,
    start_upload,
    wait_until,
    wav_bytes,
)

UPLOAD_LIMIT = SHARED_LIMITS["max_upload_bytes"]
BATCH_SLOTS = SHARED_INFERENCE_THREADS + SHARED_LIMITS["max_queued_requests"]
# Accuracy over every test sentence is the engine's test (test_whisper_onnx.py). Through the server, the everyday
# sentences (the list's last five; the Harvard ones before them are the hard, phonetically balanced kind) prove each
# encoding on the wire at half the cost.
WIRE_SENTENCES = slice(-5, None)


@pytest.fixture(name="server", scope="module")
def server_fixture(shared_server):
    return shared_server


@pytest.fixture(scope="module")
def http(server):
    with server.client() as client:
        yield client


def upload(audio, encoding: str) -> tuple[bytes, dict]:
    """The body and query parameters of one request carrying ``audio`` (16 kHz float32) as ``encoding``."""
    if encoding == "wav-16k":
        return wav_bytes(audio), {}
    if encoding == "ogg-opus-48k":
        return wav_bytes(soxr.resample(audio, 16_000, 48_000), 48_000, "OGG", "OPUS"), {}
    if encoding == "pcm16-8k":
        return pcm16(soxr.resample(audio, 16_000, 8_000)), {"sample_rate": 8000}
    if encoding == "pcm16-44k":
        return pcm16(soxr.resample(audio, 16_000, 44_100)), {"sample_rate": 44100}
    raise ValueError(encoding)


WIDEBAND_ENCODINGS = ("wav-16k", "ogg-opus-48k", "pcm16-44k")


def test_batch_requests_are_searched_with_the_configured_beams(server, http, monkeypatch, synthesize):
    """``SPEECH_MODEL__BEAM_SIZE`` (5 by default; 1 on the test servers) and ``__WINDOW_PAD_S`` (unset by default; 5
    on the test servers, 4 here, set on the running server's settings) reach the engine with the route's options."""
    state = server.app.state.serving
    defaults = type(server.settings.model)()
    assert (defaults.beam_size, defaults.window_pad_s) == (5, None)
    monkeypatch.setattr(state.settings.model, "window_pad_s", 4.0)
    with state.models.asr.registry.acquire() as lease:
        engine = lease.engine
        seen = []

        def transcribe(audio, language=None, **kwargs):
            seen.append(kwargs["options"])
            return type(engine).transcribe(engine, audio, language, **kwargs)

        monkeypatch.setattr(engine, "transcribe", transcribe)
        speech = synthesize("The birch canoe slid on the smooth planks.")
        assert http.post("/v1/asr", content=wav_bytes(speech)).status_code == 200
        files = {"file": ("clip.wav", wav_bytes(speech), "audio/wav")}
        form = {"model": "whisper-1", "prompt": "Canoe trips.", "temperature": "0.2"}
        assert http.post("/v1/audio/transcriptions", files=files, data=form).status_code == 200
    assert [(o.beam_size, o.window_pad_s, o.prompt, o.temperature) for o in seen] == [
        (1, 4.0, None, 0.0),
        (1, 4.0, "Canoe trips.", 0.2),
    ]


def test_probes_report_a_loaded_warmed_model(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "model": "whisper-base",
        "model_version": MODEL_VERSION,
        "models": [{"kind": "asr", "name": "whisper-base", "version": MODEL_VERSION}],
        "region": "local",
    }


def transcribe_all(http, texts: list[str], tts: str, encodings: tuple[str, ...], synthesize) -> list[str]:
    hypotheses = []
    for index, text in enumerate(texts):
        body, params = upload(synthesize(text, engine=tts), encodings[index % len(encodings)])
        response = http.post("/v1/asr", content=body, params=params)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["model_version"] == MODEL_VERSION and result["language"] == "en"
        assert result["timings"]["total"] >= result["timings"]["engine"] > 0
        hypotheses.append(result["text"])
    return hypotheses


def test_espeak_and_flite_speech_is_transcribed_from_wav_ogg_opus_and_raw_pcm(
    http, reference_sentences, synthesize, word_error_rate
):
    english = [s.text for s in reference_sentences if s.language == "en"][WIRE_SENTENCES]
    references, hypotheses = [], []
    for tts in ("espeak-ng", "flite"):
        heard = transcribe_all(http, english, tts, WIDEBAND_ENCODINGS, synthesize)
        print(
            f"batch WER through the server, {tts}: {word_error_rate(english, heard):.1%} over {len(english)} sentences"
        )
        references += english
        hypotheses += heard
    wer = word_error_rate(references, hypotheses)
    print(f"batch WER through the server, both voices: {wer:.1%} ({', '.join(WIDEBAND_ENCODINGS)} in turn)")
    assert wer <= 0.15, list(zip(references, hypotheses, strict=True))


def test_telephone_band_pcm_at_8_khz_is_resampled_and_transcribed(
    http, reference_sentences, synthesize, word_error_rate
):
    english = [s.text for s in reference_sentences if s.language == "en"][WIRE_SENTENCES]
    heard = transcribe_all(http, english, "flite", ("pcm16-8k",), synthesize)
    wer = word_error_rate(english, heard)
    print(f"batch WER through the server, flite as 8 kHz PCM16: {wer:.1%}")
    assert wer <= 0.15, list(zip(english, heard, strict=True))


def test_a_recording_longer_than_a_window_comes_back_whole_in_timed_segments(
    http, reference_sentences, long_recording, word_error_rate
):
    recording = long_recording([s.text for s in reference_sentences if s.language == "en"], 50)
    body, params = upload(recording.audio, "ogg-opus-48k")
    response = http.post("/v1/asr", content=body, params=params)
    assert response.status_code == 200, response.text
    result = response.json()
    segments = result["segments"]
    assert " ".join(s["text"] for s in segments) == result["text"]
    assert all(0 <= s["start"] <= s["end"] <= result["audio_seconds"] for s in segments), segments
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(segments)), segments
    assert segments[-1]["end"] > 45, "the speech after the first 30 s window is there"
    assert word_error_rate([recording.text], [result["text"]]) <= 0.15, result["text"]


def test_health_answers_while_a_transcription_runs(http, server, synthesize):
    body = wav_bytes(synthesize("Please call Stella and ask her to bring these things with her from the store."))
    with concurrent.futures.ThreadPoolExecutor(4) as pool, server.client() as other:
        transcriptions = [pool.submit(http.post, "/v1/asr", content=body) for _ in range(3)]
        health = other.get("/healthz")
        assert health.status_code == 200
        assert not all(t.done() for t in transcriptions), "the event loop waited for inference to finish"
        assert all(t.result().status_code == 200 for t in transcriptions)


def test_language_can_be_forced_and_must_be_one_the_model_knows(http, synthesize):
    body = wav_bytes(synthesize("Rice is often served in round bowls."))
    assert http.post("/v1/asr", content=body, params={"language": "en"}).json()["language"] == "en"
    unknown = http.post("/v1/asr", content=body, params={"language": "xx"})
    assert unknown.status_code == 422
    assert "language 'xx' is not supported by whisper-base" in unknown.json()["detail"]
    assert http.post("/v1/asr", content=body, params={"language": "English"}).status_code == 422


@pytest.mark.parametrize(
    ("body", "params", "status", "detail"),
    [
        (b"", {}, 400, "the request body is empty"),
        (b"%PDF-1.7 not audio at all", {}, 415, "is not WAV, Ogg or FLAC audio"),
        ("truncated", {}, 400, "the WAV body is truncated"),
        (b"\x00\x01" * 800, {"sample_rate": 96000}, 422, "sample_rate 96000 Hz is not supported"),
        (b"\x00\x01" * 800 + b"\x00", {"sample_rate": 16000}, 400, "not a whole number of 2-byte samples"),
        (b"\x00" * (UPLOAD_LIMIT + 1), {"sample_rate": 16000}, 413, f"the upload exceeds {UPLOAD_LIMIT} bytes"),
        (b"\x00\x01" * 16000 * 61, {"sample_rate": 16000}, 413, "the audio is 61.0 s long; at most 60 s per request"),
    ],
    ids=["empty", "not audio", "truncated wav", "unsupported rate", "odd pcm", "too big", "too long"],
)  # fmt: skip
def test_bad_uploads_get_a_4xx_that_says_why_and_the_server_keeps_serving(
    http, synthesize, body, params, status, detail
):
    if body == "truncated":
        body = wav_bytes(synthesize("The juice of lemons makes fine punch."))[:20_000]
    response = http.post("/v1/asr", content=body, params=params)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    follow_up = http.post("/v1/asr", content=wav_bytes(synthesize("Glue the sheet to the dark blue background.")))
    assert follow_up.status_code == 200


def test_an_oversize_upload_streamed_without_content_length_is_cut_off_with_413(http):
    def chunks():
        for _ in range(UPLOAD_LIMIT // 65_536 + 2):
            yield b"\x00" * 65_536

    response = http.post("/v1/asr", content=chunks(), params={"sample_rate": 16000})
    assert response.status_code == 413
    assert "SPEECH_LIMITS__MAX_UPLOAD_BYTES" in response.json()["detail"]


def test_models_lists_the_bundled_model_and_reload_is_off_without_an_admin_key(http):
    models = http.get("/v1/models").json()
    assert models["current"] == {"name": "whisper-base", "version": MODEL_VERSION, "source": "bundled"}
    assert models["store"] is None
    for body in (None, {"version": "."}, {"version": ".."}):
        reload = http.post("/v1/models/reload", json=body)
        assert reload.status_code == 403
        assert "administrative routes are off because no admin key is configured" in reload.json()["detail"]
        assert "SPEECH_AUTH__ADMIN_KEY_HASHES" in reload.json()["detail"]
    assert http.get("/readyz").status_code == 200


def test_uploads_take_their_queue_slot_before_the_body_is_read(server, http, synthesize):
    body = wav_bytes(synthesize("Rice is often served in round bowls.", engine="flite"))
    stalled = [
        start_upload(server.base_url, "/v1/asr", body[: len(body) // 2], declared=len(body)) for _ in range(BATCH_SLOTS)
    ]
    slots = server.app.state.serving.batch_slots
    wait_until(lambda: slots.active == BATCH_SLOTS, 30, "every half-sent upload to hold a slot")
    refused = start_upload(server.base_url, "/v1/asr", b"", declared=len(body))
    status, answer = answer_of(refused)
    assert status == 503
    assert answer["detail"] == "the server is at its limit of queued requests; retry shortly"
    for upload in stalled:
        upload.send(body[len(body) // 2 :])
    assert [answer_of(upload)[0] for upload in stalled] == [200] * BATCH_SLOTS
    assert slots.active == 0


@pytest.mark.parametrize(
    "clip",
    [silence(3.0), np.random.default_rng(7).normal(0, 0.1, 48_000).astype(np.float32)],
    ids=["digital silence", "white noise"],
)
def test_silence_and_noise_transcribe_to_nothing(http, clip):
    response = http.post("/v1/asr", content=wav_bytes(clip, subtype="FLOAT"))
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["text"], result["segments"]) == ("", [])
    assert result["audio_seconds"] == 3.0
    assert http.post("/v1/asr", content=wav_bytes(clip), params={"language": "de"}).json()["language"] == "de"


def test_metrics_expose_requests_latency_rtf_and_errors_labelled_by_region_and_version(server, http, synthesize):
    http.post("/v1/asr", content=wav_bytes(synthesize("The birch canoe slid on the smooth planks.")))
    http.post("/v1/asr", content=b"not audio")
    assert http.get("/metrics").headers["content-type"].startswith("text/plain")
    samples = scrape(server.base_url)
    fixed = {"region": "local", "model_version": MODEL_VERSION}
    assert sample(samples, "speech_requests_total", **fixed, route="/v1/asr", status="200") >= 1
    assert sample(samples, "speech_requests_total", **fixed, route="/v1/asr", status="415") >= 1
    assert sample(samples, "speech_request_duration_seconds_count", **fixed, route="/v1/asr") >= 2
    assert sample(samples, "speech_real_time_factor_ratio_count", **fixed, model="whisper-base", kind="batch") >= 1
    assert sample(samples, "speech_audio_processed_seconds_total", **fixed, model="whisper-base", kind="batch") > 1
    assert sample(samples, "speech_errors_total", **fixed, kind="bad_audio") >= 1
    assert sample(samples, "speech_model_info", **fixed, kind="asr", name="whisper-base") == 1
    assert not any(("route", "/healthz") in labels for _, labels in samples), "probes are not counted as traffic"
