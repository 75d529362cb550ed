"""Nothing personal at rest: the server writes no audio or transcript to disk, and its logs carry no transcript.

`python -m serving` runs as a real process with debug logging, a fresh HOME, TMPDIR, XDG cache and working
directory; batch and streaming requests (some refused, one malformed) go through it. Every file under those
directories and the model cache is the same before and after, and no log line holds a word of what was said.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.serving.server_fixtures import stream_audio, wait_process_ready, wav_bytes, with_silence

REPO = Path(__file__).resolve().parents[2]
SPEECH = "Please call Stella and ask her to bring these things with her from the store."
API_KEY = "a-tenant-key-that-must-not-be-logged"
SPOKEN_WORDS = ("please", "stella", "bring", "things", "store")


def _files(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` with its size and modification time."""
    found = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                stat = path.stat()
                found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def test_requests_leave_no_audio_or_transcript_on_disk_or_in_the_debug_log(tiny_en_model_dir, tmp_path, synthesize):
    home, temp, cache, work = (tmp_path / name for name in ("home", "tmp", "xdg-cache", "work"))
    for directory in (home, temp, cache, work):
        directory.mkdir()
    model_cache = tiny_en_model_dir.parents[1]
    watched = (home, temp, cache, work, model_cache)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECH_")}
    env.update(
        HOME=str(home), TMPDIR=str(temp), XDG_CACHE_HOME=str(cache), PYTHONPATH=str(REPO),
        PYTHONDONTWRITEBYTECODE="1", SPEECH_MODEL_CACHE=str(model_cache), SPEECH_LOG_LEVEL="debug",
        SPEECH_MODEL__NAME="whisper-tiny.en", SPEECH_MODEL__PROFILE="tiny.en",  # what is kept is not the model's
        SPEECH_MODEL__THREADS="1", SPEECH_TTS__ENABLED="false",  # only ASR requests are sent
        SPEECH_AUTH__API_KEY_HASHES=hashlib.sha256(API_KEY.encode()).hexdigest(), SPEECH_GRPC__PORT="0",
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_process_ready(process, base)
        before = _files(*watched)
        speech = synthesize(SPEECH, engine="flite")
        key = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=base, timeout=120, headers=key) as http:
            batch = http.post("/v1/asr", content=wav_bytes(speech))
            assert batch.status_code == 200, batch.text
            assert "stella" in batch.json()["text"].lower()
            assert http.post("/v1/asr", content=wav_bytes(speech)[:200]).status_code == 400  # truncated audio
        url = base.replace("http", "ws") + "/v1/asr/stream"
        outcome = asyncio.run(stream_audio(url, with_silence(speech), headers=key))
        assert "stella" in outcome.final_text.lower(), outcome.messages
        after = _files(*watched)
        transcripts = [batch.json()["text"], *(m["text"] for m in outcome.messages if "text" in m)]
    finally:
        process.send_signal(signal.SIGTERM)
        log, _ = process.communicate(timeout=60)
    assert after == before, f"files appeared or changed: {sorted(set(after.items()) ^ set(before.items()))}"
    assert "BINARY [640 bytes, payload not logged]" in log, "debug logging was not on, so the log proves nothing"
    words = [re.findall(r"[a-z']+", text.lower()) for text in transcripts]
    pairs = {" ".join(w[i : i + 2]) for w in words for i in range(len(w) - 1)}  # any two words said in a row
    assert {w for ws in words for w in ws} >= set(SPOKEN_WORDS) and pairs
    lowered = log.lower()
    assert not [said for said in (*SPOKEN_WORDS, *pairs) if said in lowered], log[-3000:]
    assert API_KEY not in log, "the API key (a handshake header) was traced"
    assert not re.search(r"([0-9a-f]{2} ){8}", log), "audio samples were traced"
