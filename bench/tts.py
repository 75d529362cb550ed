"""Speech synthesis latency through HTTP, cold and from the cache, and the voice's real-time factor.

    python -m bench.tts [--sentences 20] [--hits 20] [--redis-url redis://127.0.0.1:6379/0] [--quick]

The real server runs on loopback with the bundled voice (and tiny.en, the ASR model it must also serve). Each of
the Harvard sentences is requested once (a cache miss: synthesized and streamed), then ``--hits`` more times (a
hit). Cold rows give the time to the first byte (the first sentence's audio) and to the last; hit rows the whole
answer. Paragraph rows send the sentences four at a time as one text, cold: the first byte arrives once the first
sentence is spoken, long before the last. The real-time factor is the server's own: engine seconds per second of
audio it synthesized, read from ``/metrics`` (below 1 is faster than real time). Without ``--redis-url`` the cache
is the in-process LRU. Writes ``bench/results/tts.json``; ``--quick`` (2 sentences, 5 hits) is what the smoke test
runs.

Targets on 2 cores: cache hit p50 <= 5 ms through HTTP, synthesis faster than real time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.asr_speed import REPO
from serving.build.export import ensure_bundled_model
from serving.build.voice import ensure_bundled_voice
from tests.serving.server_fixtures import live_server, local_settings, scrape, server_model

SENTENCES = REPO / "bench" / "harvard_sentences.txt"
RESULTS = REPO / "bench" / "results" / "tts.json"
QUICK_SENTENCES, QUICK_HITS = 2, 5
PARAGRAPH = 4  # sentences per text in the paragraph rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(1000 * statistics.median(seconds), 2),
        "p95_ms": round(1000 * percentile(seconds, 0.95), 2),
        "count": len(seconds),
    }


def _timed(http: httpx.Client, text: str) -> tuple[float, float, str, int]:
    """(seconds to the first byte of audio, to the last, X-Speech-Cache, bytes)."""
    started = time.perf_counter()
    first = None
    size = 0
    with http.stream("POST", "/v1/tts", json={"text": text}) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            first = first or time.perf_counter()
            size += len(chunk)
    done = time.perf_counter()
    return (first or done) - started, done - started, response.headers["x-speech-cache"], size


def _synthesis_totals(base_url: str) -> tuple[float, float]:
    """(engine seconds, audio seconds) the server has synthesized so far."""
    samples = scrape(base_url)

    def total(metric: str) -> float:
        return sum(v for (name, labels), v in samples.items() if name == metric and ("kind", "synthesis") in labels)

    return total("speech_inference_duration_seconds_sum"), total("speech_audio_processed_seconds_total")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.tts", description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--hits", type=int, default=20, help="cached requests per sentence")
    parser.add_argument("--redis-url", default=None, help="cache in this Redis (default: the in-process LRU)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SENTENCES} sentences, {QUICK_HITS} hits each")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    count, hits = (QUICK_SENTENCES, QUICK_HITS) if args.quick else (args.sentences, args.hits)
    lines = SENTENCES.read_text().splitlines()
    texts = [line.split(" ", 1)[1] for line in lines if line.startswith("en ")][:count]

    cache_root = ensure_bundled_model("tiny.en").parents[1]
    ensure_bundled_voice("joe", cache_root)
    settings = local_settings(
        cache_root,
        model=server_model(cache_root, "tiny.en"),  # only warmed up here: the smallest, on one thread
        tts={"enabled": True},
        cache={"redis_url": args.redis_url} if args.redis_url else {},
    )
    load_before = os.getloadavg()
    with live_server(settings) as server, server.client() as http:
        cold_first, cold_total, hit_total = [], [], []
        for text in texts:
            first, total, cache, _ = _timed(http, text)
            if cache != "miss":
                raise SystemExit(f"expected a cold request, got a cache {cache} (is the Redis shared and warm?)")
            cold_first.append(first)
            cold_total.append(total)
        for _ in range(hits):
            for text in texts:
                _, total, cache, _ = _timed(http, text)
                hit_total.append(total)
        paragraph_first, paragraph_total = [], []
        for start in range(0, len(texts), PARAGRAPH):
            first, total, _, _ = _timed(http, " ".join(texts[start : start + PARAGRAPH]))
            paragraph_first.append(first)
            paragraph_total.append(total)
        engine_s, audio_s = _synthesis_totals(server.base_url)
    report: dict[str, Any] = {
        "cache": "redis" if args.redis_url else "memory",
        "sentences": len(texts),
        "cold_first_byte": _summary(cold_first),
        "cold_total": _summary(cold_total),
        "hit_total": _summary(hit_total),
        "paragraph_first_byte": _summary(paragraph_first),
        "paragraph_total": _summary(paragraph_total),
        "synthesis": {
            "audio_s": round(audio_s, 2),
            "engine_s": round(engine_s, 2),
            "rtf": round(engine_s / audio_s, 3),
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print(f"{len(texts)} sentences, {report['synthesis']['audio_s']} s of speech, cache: {report['cache']}")
    print(f"{'request':<22}{'p50':>10}{'p95':>10}")
    for name in ("cold_first_byte", "cold_total", "hit_total", "paragraph_first_byte", "paragraph_total"):
        row = report[name]
        print(f"{name:<22}{row['p50_ms']:>8.1f}ms{row['p95_ms']:>8.1f}ms")
    print(f"synthesis real-time factor {report['synthesis']['rtf']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
