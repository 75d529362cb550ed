"""Attacks on the batch path, each against the real server: bodies refused before they are read, stalled uploads
timed out, decompression bombs refused from their headers; and the server keeps serving after every one."""

from __future__ import annotations

import concurrent.futures
import io

import numpy as np
import pytest
import soundfile

from tests.serving.server_fixtures import (
    ADMIN_KEY,
    ENV_KEY,
    GUARDED_UPLOAD_IDLE_S,
    answer_of,
    start_upload,
    wav_bytes,
)

SPEECH = "The juice of lemons makes fine punch."
KEY = {"X-API-Key": ENV_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}
BOMB_MINUTES = 2
DECLARED = 200_000_000  # bytes a request says it will send, and never does


@pytest.fixture(scope="module")
def flac_bomb() -> bytes:
    """Two minutes of 8-channel 48 kHz silence: about 46 KB of FLAC that decode to 184 MB of float samples."""
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", 48_000, 8, format="FLAC", subtype="PCM_16") as bomb:
        ten_seconds = np.zeros((480_000, 8), dtype=np.int16)
        for _ in range(BOMB_MINUTES * 6):
            bomb.write(ten_seconds)
    return buffer.getvalue()


def still_serves(server, synthesize) -> None:
    with server.client(headers=KEY) as http:
        assert http.get("/healthz").status_code == 200
        response = http.post("/v1/asr", content=wav_bytes(synthesize(SPEECH, engine="flite")))
    assert response.status_code == 200, response.text
    assert "juice of lemons" in response.json()["text"].lower()


def test_a_request_without_the_right_key_is_refused_before_its_body_is_read(guarded_server, synthesize):
    # 200 MB declared and none of it sent: a server that read the body before checking the key would wait here.
    for path, headers in (
        ("/v1/models/reload", {"Content-Type": "application/json"}),  # the 200 MB JSON, without a key
        ("/v1/asr", {}),
        ("/v1/models/reload", KEY),  # a transcription key is not an admin key
    ):
        status, body = answer_of(start_upload(guarded_server.base_url, path, b"", declared=DECLARED, headers=headers))
        assert status == 401, (path, headers)
        assert "key" in body["detail"]
    still_serves(guarded_server, synthesize)


def test_a_body_declared_over_its_limit_is_refused_before_it_is_read(guarded_server, synthesize):
    for path, headers, detail in (
        ("/v1/models/reload", ADMIN, "the request body exceeds 65536 bytes, the most this route takes"),
        ("/v1/asr", KEY, "the upload exceeds 2000000 bytes (SPEECH_LIMITS__MAX_UPLOAD_BYTES)"),
    ):
        status, body = answer_of(start_upload(guarded_server.base_url, path, b"", declared=DECLARED, headers=headers))
        assert (status, body["detail"]) == (413, detail)
    still_serves(guarded_server, synthesize)


def test_a_json_body_streamed_past_its_limit_is_cut_off(guarded_server, synthesize):
    def chunks():
        yield b'{"version": "'
        for _ in range(20):
            yield b"1" * 8192

    with guarded_server.client(headers=ADMIN) as http:
        response = http.post("/v1/models/reload", content=chunks())
    assert response.status_code == 413, response.text
    still_serves(guarded_server, synthesize)


def test_a_stalled_upload_gets_408_and_frees_its_slot(guarded_server, synthesize):
    body = wav_bytes(synthesize(SPEECH, engine="flite"))
    stalled = start_upload(guarded_server.base_url, "/v1/asr", body[:-1], declared=len(body), headers=KEY)
    status, answer = answer_of(stalled)
    assert status == 408
    assert f"then nothing for {GUARDED_UPLOAD_IDLE_S:g} s" in answer["detail"]
    assert f"{len(body) - 1} bytes arrived" in answer["detail"]
    assert guarded_server.app.state.serving.batch_slots.active == 0
    still_serves(guarded_server, synthesize)


def test_flac_bombs_are_refused_from_their_header_before_any_sample_is_decoded(guarded_server, synthesize, flac_bomb):
    with concurrent.futures.ThreadPoolExecutor(3) as pool, guarded_server.client(headers=KEY) as http:
        bombs = [pool.submit(http.post, "/v1/asr", content=flac_bomb) for _ in range(3)]
        answers = [bomb.result() for bomb in bombs]
    for answer in answers:
        assert answer.status_code == 413, answer.text
        refused_from_header = f"the flac file's header says the audio is {BOMB_MINUTES * 60:.1f} s long; at most 60 s"
        assert answer.json()["detail"].startswith(refused_from_header)
    still_serves(guarded_server, synthesize)
