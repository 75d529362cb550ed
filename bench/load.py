"""Load and latency of one server, the numbers users size a deployment by, with faster-whisper beside ours.

    python -m bench.load [--quick] [--out bench/results/load.json]

One ``python -m serving`` (Whisper base, 2 inference threads) on loopback, used as clients use it:

* Streams: N clients stream speech in real time at once (``bench/streams.py``'s clients), N = 1, 2, 3 ...
  The capacity is the largest N whose finals arrive with p95 under 800 ms after the end of speech, with no stream
  failing; the levels beyond it show how partial cadence thins out. At N = 1: first-partial and final latency.
* Batch throughput: 1, 2, 4 and 8 concurrent requests of short clips through :class:`speech_client.AsyncSpeechClient`
  (audio seconds per wall second), and faster-whisper (int8, greedy, the same 2 threads x 2 workers) in-process on
  the same clips at the same concurrency: ours pays HTTP, the peer does not.
* Batch latency: p50/p95 per short clip at concurrency 1, and for one long recording (10 min; ``bench/longform``'s
  recording), ours against faster-whisper's batched pipeline, greedy.
* TTS: cold (cache miss) and cache-hit latency of ``POST /v1/tts`` (the bundled voice, the in-process cache).

Every request, ours and the peer's, is told the clips' language (English), as the streams are.

``--quick`` (under two minutes on a quiet machine) runs one stream, one short clip (at 1 and 2 concurrent
requests), a 1-minute recording and two TTS texts, for CI: every section and table, not the speed. Both engines run
tiny.en, ours decoding as the test suite's servers do (greedy, windows fitted with 5 s of silence, one intra-op
thread) and faster-whisper on one thread, without an untimed warm-up call; the JSON records the settings that ran.
Latency figures on a shared machine are pessimistic: other processes take the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import report
from bench.asr_speed import REPO, faster_whisper_dir, load_test_helpers
from bench.longform import faster_whisper_model
from bench.servers import ServerProcess
from bench.streams import conversation, frames_of, run_level
from contract.topology import Jurisdiction, Region, Topology
from serving.build.export import ensure_bundled_model
from serving.build.voice import ensure_bundled_voice
from serving.bundled import PROFILES
from serving.engine import SAMPLE_RATE
from speech_client import AsyncSpeechClient
from tests.serving.server_fixtures import decoding_env, silence, wav_bytes

TARGET_FINAL_P95_S = 0.8
THREADS = 2
# Every clip is English, and both engines are told so. Not told, faster-whisper pays a separate encoder pass per
# request to detect it (about half a short clip's cost) while ours reads it off its first decoder step: the peer
# would be measured doing more work than ours.
LANGUAGE = "en"
# The server as one replica: named by a one-region topology, so the client's chain is that server alone.
LOCAL = Topology(
    regions=(Region("local", "local-1", "any", "UTC", continents=(), cloudflare_regions=()),),
    jurisdictions=(Jurisdiction("any", "unrestricted", is_strict_residency=False),),
    default_region="local",
)
TTS_TEXTS = (
    "Your order has shipped and will arrive on Thursday.",
    "The meeting moved to three in the afternoon.",
    "Please hold while we connect your call.",
    "The weather tomorrow is mostly sunny.",
    "Thank you for calling, goodbye.",
)


@dataclass(frozen=True)
class Sizes:
    stream_levels: tuple[int, ...]
    stream_seconds: float
    batch_levels: tuple[int, ...]
    requests_per_worker: int
    clips: int
    long_minutes: float
    long_runs: int
    tts_texts: int
    # One untimed peer call before the batch levels, so that its first-call allocations stay out of their timing.
    peer_warm_up: bool = True


FULL = Sizes((1, 2, 3, 4, 5, 6), 20.0, (1, 2, 4, 8), 2, 16, 10.0, 3, 5)
QUICK = Sizes((1,), 3.0, (1, 2), 1, 1, 1.0, 1, 2, peer_warm_up=False)  # its timings are not read: no warm-up to pay
# ``--quick`` proves that every section runs and reports, not the speed: the smallest bundled model on both sides,
# and the server decoding as the test suite's do (greedy, on windows fitted with 5 s of silence, one intra-op
# thread), a fraction of the CPU of base at the product defaults that the full run keeps. The 1-minute recording
# still spans more than one window.
QUICK_PROFILE = "tiny.en"
QUICK_MODEL = {
    "SPEECH_MODEL__NAME": PROFILES[QUICK_PROFILE].name,
    "SPEECH_MODEL__PROFILE": QUICK_PROFILE,
    **decoding_env(),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one stream, one clip, a 1-minute recording, two TTS texts; tiny.en on both sides, greedy (CI)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default bench/results/load.json)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    profile, model, peer_threads = (QUICK_PROFILE, QUICK_MODEL, 1) if args.quick else ("base", {}, THREADS)
    helpers = load_test_helpers()
    machine = report.machine()
    print(report.machine_line(machine))
    clips = _short_clips(helpers, sizes.clips)
    env = {
        "SPEECH_INFERENCE_THREADS": str(THREADS),
        "SPEECH_STREAM__MAX_SESSIONS": str(max(sizes.stream_levels)),
        "SPEECH_LIMITS__MAX_UPLOAD_BYTES": str(64 << 20),
        "SPEECH_LIMITS__MAX_QUEUED_REQUESTS": str(2 * max(sizes.batch_levels)),
        "SPEECH_TTS__ENABLED": "true",
        **model,
    }
    # The server only loads built models; a fresh checkout builds them here once.
    ensure_bundled_model(profile)
    ensure_bundled_voice("joe")
    with ServerProcess("load", env).start() as server, tempfile.TemporaryDirectory(prefix="fw-model-") as tmp:
        peer = faster_whisper_model(faster_whisper_dir(profile, Path(tmp)), "int8", peer_threads, workers=THREADS)
        peer_short, peer_long = _peer_transcriber(peer, batched=False), _peer_transcriber(peer, batched=True)
        ready_s = server.wait_ready()
        print(f"server ready in {ready_s:.1f} s")
        results: dict[str, Any] = {
            "streams": _streams(server, sizes),
            "batch_throughput": _throughput(server, clips, sizes, peer_short),
            "batch_long": _long(server, helpers, sizes, peer_long),
            "tts": asyncio.run(_tts(server.base_url, sizes.tts_texts)),
        }
    results["batch_short"] = results["batch_throughput"].pop("short_clip_latency")
    results_path = report.write(
        "load",
        {
            "command": "python -m bench.load " + " ".join(argv if argv is not None else sys.argv[1:]),
            "measured": "under load (shared machine)" if machine["load_average"][0] > 1 else "quiet machine",
            "machine": machine,
            "server": {"model": PROFILES[profile].name, "language": LANGUAGE, **env},
            "peer": f"faster-whisper int8, greedy, language {LANGUAGE}, cpu_threads={peer_threads}, "
            f"num_workers={THREADS}, in-process" + (f", {PROFILES[profile].name}" if args.quick else ""),
            **results,
        },
        args.out,
    )
    print(f"results: {results_path}")
    return 0


def _peer_transcriber(model: Any, *, batched: bool) -> Callable[[np.ndarray], str]:
    """faster-whisper greedy, told the language: ``model.transcribe``, or its ``BatchedInferencePipeline``."""
    from faster_whisper import BatchedInferencePipeline

    engine = BatchedInferencePipeline(model) if batched else model

    def transcribe(audio: np.ndarray) -> str:
        segments, _ = engine.transcribe(audio, language=LANGUAGE, beam_size=1)
        return " ".join(s.text.strip() for s in segments)

    return transcribe


def _short_clips(helpers: Any, count: int) -> list[np.ndarray]:
    texts = [s.text for s in helpers.load_sentences(REPO / "bench" / "harvard_sentences.txt")]
    return [helpers.synthesize(texts[i], engine="flite" if i % 2 else "espeak-ng") for i in range(count)]


@dataclass
class Level:
    """What N concurrent real-time streams got from one server."""

    streams: int
    finals: int
    final_p50_s: float | None
    final_p95_s: float | None
    first_partial_p50_s: float | None
    first_partial_p95_s: float | None
    partials_per_stream_s: float
    errors: int  # streams that did not end with a normal close

    def keeps_up(self, target_s: float) -> bool:
        return self.errors == 0 and self.final_p95_s is not None and self.final_p95_s <= target_s


def measure_level(url: str, clips: list[tuple[list[bytes], list[Any]]], level: int) -> Level:
    """Stream ``clips[:level]`` to ``url`` at once, in real time, and summarise what came back."""
    results = run_level(url, clips, level)
    finals = [d for r in results for d in r.finals]
    firsts = [d for r in results for d in r.first_partials]
    return Level(
        streams=level,
        finals=len(finals),
        final_p50_s=report.percentile(finals, 50),
        final_p95_s=report.percentile(finals, 95),
        first_partial_p50_s=report.percentile(firsts, 50),
        first_partial_p95_s=report.percentile(firsts, 95),
        partials_per_stream_s=statistics.mean(r.partials / r.seconds for r in results),
        errors=sum(r.close_code != 1000 for r in results),
    )


def _streams(server: ServerProcess, sizes: Sizes) -> dict[str, Any]:
    talks = [conversation(sizes.stream_seconds, offset) for offset in range(max(sizes.stream_levels))]
    clips = [(frames_of(audio, "pcm16"), spoken) for audio, spoken in talks]
    levels: list[Level] = []
    capacity, misses = 0, 0
    for level in sizes.stream_levels:
        measured = measure_level(f"{server.ws_url}?language={LANGUAGE}", clips, level)
        levels.append(measured)
        if measured.keeps_up(TARGET_FINAL_P95_S) and misses == 0:
            capacity = level
        elif not measured.keeps_up(TARGET_FINAL_P95_S):
            misses += 1
            if misses == 2:  # two levels past capacity show how cadence degrades; more only takes longer
                break
    rows = [
        (lv.streams, lv.finals, lv.final_p50_s, lv.final_p95_s, lv.partials_per_stream_s, lv.errors,
         "yes" if lv.keeps_up(TARGET_FINAL_P95_S) else "no")
        for lv in levels
    ]  # fmt: skip
    columns = ("streams", "finals", "final p50 s", "final p95 s", "partials/stream-s", "errors", "keeps up")
    print(report.table(f"real-time streams ({sizes.stream_seconds:g} s each); peer: none", columns, rows))
    one = levels[0]
    print(
        f"capacity: {capacity} streams with final p95 < {TARGET_FINAL_P95_S * 1000:.0f} ms and no errors; at 1 stream "
        f"first partial p50/p95 {_ms(one.first_partial_p50_s)}/{_ms(one.first_partial_p95_s)} ms, final "
        f"{_ms(one.final_p50_s)}/{_ms(one.final_p95_s)} ms after end of speech"
    )
    return {
        "target_final_p95_s": TARGET_FINAL_P95_S,
        "capacity": capacity,
        "levels": [asdict(lv) for lv in levels],
        "one_stream": {
            "first_partial_p50_s": one.first_partial_p50_s,
            "first_partial_p95_s": one.first_partial_p95_s,
            "final_p50_s": one.final_p50_s,
            "final_p95_s": one.final_p95_s,
        },
        "peer": None,
    }


def _throughput(
    server: ServerProcess, clips: list[np.ndarray], sizes: Sizes, peer: Callable[[np.ndarray], str]
) -> dict[str, Any]:
    bodies = [wav_bytes(c) for c in clips]
    seconds = [len(c) / SAMPLE_RATE for c in clips]
    if sizes.peer_warm_up:
        peer(clips[0])
    rows: list[tuple[object, ...]] = []
    levels: list[dict[str, Any]] = []
    short: dict[str, Any] = {}
    for level in sizes.batch_levels:
        jobs = [i % len(clips) for i in range(max(len(clips), level * sizes.requests_per_worker))]
        ours_wall, ours_latencies = asyncio.run(_ours_batch(server.base_url, bodies, jobs, level))
        peer_wall, peer_latencies = _peer_batch(peer, clips, jobs, level)
        audio = sum(seconds[i] for i in jobs)
        ours, theirs = audio / ours_wall, audio / peer_wall
        levels.append({"concurrency": level, "requests": len(jobs), "audio_s": audio, "ours": ours, "peer": theirs})
        rows.append((level, len(jobs), round(audio, 1), ours, theirs, report.ratio(ours, theirs)))
        if level == 1:
            short = {
                "clips": len(jobs),
                "ours_p50_s": report.percentile(ours_latencies, 50),
                "ours_p95_s": report.percentile(ours_latencies, 95),
                "peer_p50_s": report.percentile(peer_latencies, 50),
                "peer_p95_s": report.percentile(peer_latencies, 95),
            }
    columns = ("concurrent", "requests", "audio s", "ours audio-s/s", "peer audio-s/s", "ours/peer")
    print(report.table("batch throughput (short clips)", columns, rows))
    if short:
        print(
            f"short clips at 1 request: ours p50/p95 {_ms(short['ours_p50_s'])}/{_ms(short['ours_p95_s'])} ms, "
            f"peer {_ms(short['peer_p50_s'])}/{_ms(short['peer_p95_s'])} ms"
        )
    return {"levels": levels, "short_clip_latency": short}


async def _ours_batch(base_url: str, bodies: list[bytes], jobs: list[int], level: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(jobs)
    async with AsyncSpeechClient({"local": base_url}, topology=LOCAL) as client:
        # Opens the connection the workers then reuse; silence in a given language is answered without decoding.
        await client.transcribe(wav_bytes(silence(0.5)), language=LANGUAGE)

        async def worker() -> None:
            while queue:
                body = bodies[queue.pop()]
                started = time.perf_counter()
                await client.transcribe(body, language=LANGUAGE)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(level)))
        return time.perf_counter() - started, latencies


def _peer_batch(
    peer: Callable[[np.ndarray], str], clips: list[np.ndarray], jobs: list[int], level: int
) -> tuple[float, list[float]]:
    def timed(index: int) -> float:
        started = time.perf_counter()
        peer(clips[index])
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(level) as pool:
        latencies = list(pool.map(timed, jobs))
    return time.perf_counter() - started, latencies


def _long(server: ServerProcess, helpers: Any, sizes: Sizes, peer: Callable[[np.ndarray], str]) -> dict[str, Any]:
    texts = [s.text for s in helpers.load_sentences(REPO / "bench" / "harvard_sentences.txt")]
    recording = helpers.long_recording(texts, sizes.long_minutes * 60)
    audio_s = len(recording.audio) / SAMPLE_RATE
    body = wav_bytes(recording.audio)

    async def ours_once() -> float:
        async with AsyncSpeechClient({"local": server.base_url}, topology=LOCAL, timeout_s=1800) as client:
            started = time.perf_counter()
            await client.transcribe(body, language=LANGUAGE)
            return time.perf_counter() - started

    ours, theirs = [], []
    for _ in range(sizes.long_runs):
        ours.append(asyncio.run(ours_once()))
        started = time.perf_counter()
        peer(recording.audio)
        theirs.append(time.perf_counter() - started)
    result: dict[str, Any] = {
        "audio_s": round(audio_s, 1),
        "runs": sizes.long_runs,
        "ours_p50_s": report.percentile(ours, 50),
        "ours_p95_s": report.percentile(ours, 95),
        "peer_p50_s": report.percentile(theirs, 50),
        "peer_p95_s": report.percentile(theirs, 95),
        "peer": "faster-whisper int8 BatchedInferencePipeline, greedy",
    }
    result["ours_rtf"] = statistics.median(ours) / audio_s
    result["peer_rtf"] = statistics.median(theirs) / audio_s
    rows = [
        ("ours", result["ours_p50_s"], result["ours_p95_s"], result["ours_rtf"]),
        ("faster-whisper", result["peer_p50_s"], result["peer_p95_s"], result["peer_rtf"]),
    ]
    speedup = report.ratio(result["peer_p50_s"], result["ours_p50_s"])
    title = f"long recording ({audio_s / 60:.1f} min, {sizes.long_runs} runs); peer/ours p50 {report.times(speedup)}"
    print(report.table(title, ("engine", "p50 s", "p95 s", "RTF"), rows))
    return result


async def _tts(base_url: str, count: int) -> dict[str, Any]:
    texts = TTS_TEXTS[:count]
    async with AsyncSpeechClient({"local": base_url}, topology=LOCAL) as client:
        await client.synthesize("Ready.")  # opens the connection the timed requests reuse
        cold: list[float] = []
        hit: list[float] = []
        misses = hits = 0
        for kind, latencies in (("cold", cold), ("hit", hit)):
            for text in texts:
                started = time.perf_counter()
                speech = await client.synthesize(text)
                latencies.append(time.perf_counter() - started)
                misses += kind == "cold" and not speech.is_cache_hit
                hits += kind == "hit" and speech.is_cache_hit
    result = {
        "texts": len(texts),
        "cold_p50_s": report.percentile(cold, 50),
        "cold_p95_s": report.percentile(cold, 95),
        "hit_p50_s": report.percentile(hit, 50),
        "hit_p95_s": report.percentile(hit, 95),
        "misses_reported": misses,
        "hits_reported": hits,
        "peer": None,
    }
    rows = [
        ("cold (miss)", result["cold_p50_s"], result["cold_p95_s"]),
        ("cache hit", result["hit_p50_s"], result["hit_p95_s"]),
    ]
    print(
        report.table(
            f"TTS ({len(texts)} texts: {misses} first requests answered X-Speech-Cache: miss, {hits} repeats hit)",
            ("", "p50 s", "p95 s"),
            rows,
        )
    )
    return result


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


if __name__ == "__main__":
    sys.exit(main())
