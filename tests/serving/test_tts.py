"""Speech synthesis on the live server: streamed sentence by sentence, cached in a real Redis, intelligible to our
own ASR, refused clearly when the input is bad, and reachable with OpenAI's own client."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import h11
import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import soxr

from serving.bundled import VOICE_VERSION
from serving.engine import DecodeOptions
from tests.serving.redis_server import RedisServer
from tests.serving.server_fixtures import LiveServer, live_server, local_settings, sample, scrape, server_model

MAX_CHARS = 300
RETRY_AFTER_S = 0.2
VOICE_RATE = 22_050
THREE_SENTENCES = "The sun came out at noon. We walked along the river, slowly. Did you see the boats?"


@pytest.fixture(scope="module")
def tts_server(tiny_en_model_dir, bundled_voice_dir, redis_server) -> Iterator[LiveServer]:
    """tiny.en for ASR (the server needs one; these tests do not transcribe with it) and the bundled voice, with
    the cache in the module's Redis and a short text limit that the bad-input tests run into."""
    cache_root = tiny_en_model_dir.parents[1]
    assert bundled_voice_dir.parents[1] == cache_root
    settings = local_settings(
        cache_root,
        model=server_model(cache_root, "tiny.en"),
        tts={"enabled": True, "max_chars": MAX_CHARS},
        cache={"redis_url": redis_server.url, "retry_after_s": RETRY_AFTER_S, "timeout_s": 0.5},
    )
    with live_server(settings) as live:
        yield live


@pytest.fixture
def running_redis(redis_server) -> RedisServer:
    if redis_server.process is None:
        redis_server.start()
    return redis_server


def chunked_post(base_url: str, path: str, body: dict) -> tuple[h11.Response, list[bytes]]:
    """POST ``body`` as JSON and return the response and its body as the server cut it into HTTP chunks."""
    address = urlsplit(base_url)
    payload = json.dumps(body).encode()
    connection = h11.Connection(h11.CLIENT)
    with socket.create_connection((address.hostname, address.port), timeout=120) as sock:
        headers = [
            ("Host", address.netloc),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
        ]
        sock.sendall(connection.send(h11.Request(method="POST", target=path, headers=headers)))
        sock.sendall(connection.send(h11.Data(data=payload)) + connection.send(h11.EndOfMessage()))
        response, chunks, current = None, [], b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                current += event.data
                if event.chunk_end:
                    chunks.append(current)
                    current = b""
            elif isinstance(event, h11.EndOfMessage):
                break
    assert response is not None
    return response, chunks


def header(response: h11.Response, name: str) -> str:
    found = [value.decode() for key, value in response.headers if key.decode().lower() == name.lower()]
    return found[0] if found else ""


def seconds_of(wav: bytes) -> float:
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    assert rate == VOICE_RATE
    return len(audio) / rate


def test_a_long_text_streams_sentence_by_sentence_then_comes_from_the_cache(tts_server, redis_server):
    before = scrape(tts_server.base_url)
    response, chunks = chunked_post(tts_server.base_url, "/v1/tts", {"text": THREE_SENTENCES, "voice": "joe"})
    assert response.status_code == 200
    assert header(response, "transfer-encoding") == "chunked" and header(response, "content-type") == "audio/wav"
    assert header(response, "x-speech-cache") == "miss"
    assert header(response, "x-speech-model-version") == VOICE_VERSION
    assert len(chunks) == 3, "one chunk of audio per sentence, each sent when it was ready"
    whole = b"".join(chunks)
    first_sentence, total = seconds_of(chunks[0]), seconds_of(whole)
    assert 0.5 < first_sentence < total / 2, "the first chunk is a playable WAV of the first sentence alone"

    with tts_server.client() as http:
        again = http.post("/v1/tts", json={"text": f"  {THREE_SENTENCES.replace(' ', '   ')} "})
    assert again.status_code == 200 and again.headers["x-speech-cache"] == "hit", "same text once normalized"
    assert again.content == whole and again.headers["content-length"] == str(len(whole))
    assert redis_server.client().dbsize() >= 1, "the audio is in Redis, not only in the server"
    after = scrape(tts_server.base_url)
    labels = {"region": "local", "model_version": VOICE_VERSION}
    for result in ("hit", "miss"):
        looked_up = {**labels, "cache": "tts", "result": result}
        counted = sample(after, "speech_cache_lookups_total", **looked_up)
        assert counted - before.get(("speech_cache_lookups_total", frozenset(looked_up.items())), 0) == 1
    assert sample(after, "speech_tts_cache_served_bytes_total", **labels) >= len(whole)


def test_speed_and_format_are_part_of_the_cached_audio(tts_server):
    text = {"text": "Speed changes the length of the audio."}
    with tts_server.client() as http:
        normal = http.post("/v1/tts", json=text)
        fast = http.post("/v1/tts", json={**text, "speed": 2.0})
        ogg = http.post("/v1/tts", json={**text, "format": "ogg"})
    assert [r.headers["x-speech-cache"] for r in (fast, ogg)] == ["miss", "miss"]
    assert seconds_of(fast.content) < 0.75 * seconds_of(normal.content)
    assert ogg.headers["content-type"] == "audio/ogg"
    audio, rate = sf.read(io.BytesIO(ogg.content))
    assert rate == VOICE_RATE and abs(len(audio) / rate - seconds_of(normal.content)) < 0.5


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"text": ""}, 422, "text is empty; send 1 to 300 characters"),
        ({"text": " \n\t "}, 422, "text is empty"),
        ({"text": "word " * 80}, 413, "text has 399 characters; the limit is 300 (SPEECH_TTS__MAX_CHARS)"),
        ({"text": "Hello.", "voice": "nobody"}, 400, "voice 'nobody' is not served here; voices: joe"),
        ({"text": "Hello 你好 🙂"}, 422, "'你' (U+4F60), '好' (U+597D), '🙂' (U+1F642); use Latin letters"),
        ({"text": "Bell\x07"}, 422, "'\\x07' (U+0007)"),
        ({"text": "Hello.", "format": "mp3"}, 422, "'wav' or 'ogg'"),
        ({"text": "Hello.", "speed": 9}, 422, "less than or equal to 4"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_speaking(tts_server, body, status, detail):
    with tts_server.client() as http:
        refused = http.post("/v1/tts", json=body)
        assert refused.status_code == status, refused.text
        assert detail in str(refused.json()["detail"])
        spoken = http.post("/v1/tts", json={"text": "Still here."})
    assert spoken.status_code == 200 and seconds_of(spoken.content) > 0.3


def test_a_redis_that_stops_mid_test_costs_the_cache_not_the_answer_and_the_cache_recovers(tts_server, running_redis):
    text = {"text": "Redis may fail at any time."}
    with tts_server.client() as http:
        running_redis.stop()
        without = http.post("/v1/tts", json=text)
        assert without.status_code == 200 and without.headers["x-speech-cache"] == "miss"
        errors = sum(
            value for (name, labels), value in scrape(tts_server.base_url).items()
            if name == "speech_tts_cache_errors_total" and ("backend", "redis") in labels
        )  # fmt: skip
        assert errors >= 1, "the failure was counted"
        running_redis.start()
        deadline = time.monotonic() + 30
        stored = without
        while (response := http.post("/v1/tts", json=text)).headers["x-speech-cache"] != "hit":
            assert response.status_code == 200
            assert time.monotonic() < deadline, "the cache never came back after Redis did"
            stored = response
            time.sleep(RETRY_AFTER_S)
    # Piper samples its noise afresh each time, so only the cache makes two answers the same bytes.
    assert response.content == stored.content


def test_readiness_lists_the_voice_beside_the_asr_model(tts_server):
    ready = httpx.get(tts_server.base_url + "/readyz").json()
    assert {"kind": "tts", "name": "piper-en-us-joe-medium", "version": VOICE_VERSION} in ready["models"]
    assert {m["kind"] for m in ready["models"]} == {"asr", "tts"}


def test_the_openai_client_speaks_through_the_compatible_route(tts_server):
    client = openai.OpenAI(base_url=tts_server.base_url + "/v1", api_key="unused-without-keys", max_retries=0)
    wav = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello from the client.", response_format="wav"
    )
    assert seconds_of(wav.content) > 0.5
    default = client.audio.speech.create(model="tts-1-hd", voice="joe", input="The default format is mp3.")
    audio, rate = sf.read(io.BytesIO(default.content))
    assert rate == VOICE_RATE and len(audio) / rate > 0.5
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="nova", input="Streamed as Ogg Opus. In two sentences.", response_format="opus"
    ) as streamed:
        opus = b"".join(streamed.iter_bytes())
    audio, rate = sf.read(io.BytesIO(opus))
    assert rate == 48_000 and len(audio) / rate > 1.0
    with pytest.raises(openai.BadRequestError, match="model 'whisper-1' is not served; use one of"):
        client.audio.speech.create(model="whisper-1", voice="alloy", input="Wrong model.")


@pytest.mark.slow
def test_synthesized_sentences_are_transcribed_back_by_our_asr(
    tts_server, whisper_engine, reference_sentences, word_error_rate
):
    """The suite's English ASR sentences (written for recognition tests, never tuned for this voice), spoken through
    HTTP and transcribed by whisper-base. Piper samples its noise afresh each time: measured 3-9% WER over nine runs
    (4-6% with 5 beams), 10-12% on the harder Harvard sentences.

    The clips are transcribed in one batch as streaming finals are: greedily, each on a window fitted to it plus 5 s
    of silence rather than a padded 30 s one (the same WER on short clips at under a third of the encoder work,
    ``serving/mel.py``). Greedy took 3.7 CPU-s here, 5 beams 5.3."""
    sentences = [s.text for s in reference_sentences if s.language == "en"]
    clips = []
    with tts_server.client() as http:
        for sentence in sentences:
            response = http.post("/v1/tts", json={"text": sentence})
            audio, rate = sf.read(io.BytesIO(response.content), dtype="float32")
            clips.append(soxr.resample(audio, rate, 16_000).astype(np.float32))
    fitted = DecodeOptions(beam_size=1, window_pad_s=5.0)
    transcripts = [t.text for t in whisper_engine.transcribe_batch(clips, "en", options=fitted)]
    wer = word_error_rate(sentences, transcripts)
    print(f"\nPiper read back by whisper-base: WER {wer:.1%}")
    assert wer <= 0.15, list(zip(sentences, transcripts, strict=True))
