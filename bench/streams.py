"""Stream latency and capacity: real-time streams to the real server on loopback, 1, 2, 3 ... at once.

    python -m bench.streams [--streams 1,2,3,4,5] [--seconds 30] [--threads 2] [--model-threads N] [--codec pcm16|opus]
        [--final-window-pad-s S|off]
        [--quick]

Each client streams synthesized English sentences with pauses in real time (20 ms frames, PCM16 or 16 kbps Opus)
and timestamps what comes back. Every sentence's speech is known to the sample, so latencies are measured from the
speech itself, as a user feels them:

- *final*: from the end of a sentence's speech to the arrival of the final that holds it; it includes the silence
  the VAD must hear before it may end an utterance (``end_silence_ms``, 600 ms) unless the final decoded
  speculatively at the first 200 ms of silence could be sent as it was;
- *first partial*: from the start of a sentence's speech to its utterance's first partial;
- *partial gap*: the time between consecutive partials of an utterance while it is spoken (the first one counted
  from the start of speech).

Level 1 is the single-stream latency. A level *keeps up* when every stream closed normally, the p95 final is within
``--target`` (1.5 s) and the median partial gap within 1 s; the capacity is the largest level that keeps up (and
every level below it too); the 800 ms capacity is the largest whose p95 final is within 0.8 s. CPU seconds per
stream-second are this process's (server and clients), which load from other processes hardly changes.

The machine is measured as it is: on a shared machine other load makes every delay pessimistic. Results go to
``bench/results/streams.json`` (``--out``) with the machine and its load average.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.asr_speed import REPO
from bench.longform import _machine
from serving.engine import SAMPLE_RATE
from serving.settings import GrpcSettings, ModelSettings, Settings, StreamSettings, TtsSettings
from tests.serving.conftest import TtsEngine, load_sentences, synthesize
from tests.serving.server_fixtures import live_server, opus_packets, pcm16, scrape, silence

RESULTS = REPO / "bench" / "results" / "streams.json"
FRAME_S = 0.02
VOICED_LEVEL = 10 ** (-50 / 20)  # a sample this loud is speech (the clips are clean synthesis)
PAUSE_S = 1.2  # between sentences: longer than end_silence_ms, so every sentence is an utterance
QUICK = {"streams": "1,2", "seconds": 4.0}  # a sentence per stream


@dataclass(frozen=True)
class Spoken:
    """One sentence's speech in a stream, in seconds from the stream's first sample."""

    start: float
    end: float


@dataclass
class StreamResult:
    finals: list[float] = field(default_factory=list)
    first_partials: list[float] = field(default_factory=list)
    partial_gaps: list[float] = field(default_factory=list)
    partials: int = 0
    seconds: float = 0.0
    close_code: int | None = None
    error: str | None = None  # why the stream failed before it closed (connection refused, reset)


@dataclass
class Level:
    streams: int
    finals: int
    final_p50: float
    final_p95: float
    first_partial_p50: float
    first_partial_p95: float
    partial_gap_p50: float
    partial_gap_p95: float
    partials_per_s: float
    shed: float
    cpu_per_stream_s: float
    keeps_up: bool


def conversation(seconds: float, offset: int) -> tuple[np.ndarray, list[Spoken]]:
    """About ``seconds`` of the test set's English sentences, flite and espeak-ng in turn, with pauses."""
    texts = [s.text for s in load_sentences() if s.language == "en"]
    parts: list[np.ndarray] = [silence(0.5)]
    spoken: list[Spoken] = []
    cursor, index = len(parts[0]), offset
    while cursor < seconds * SAMPLE_RATE:
        engine: TtsEngine = "flite" if index % 2 else "espeak-ng"
        clip = synthesize(texts[index % len(texts)], engine=engine)
        first, last = voiced(clip)
        spoken.append(Spoken((cursor + first) / SAMPLE_RATE, (cursor + last) / SAMPLE_RATE))
        parts += [clip, silence(PAUSE_S)]
        cursor += len(clip) + len(parts[-1])
        index += 1
    return np.concatenate(parts), spoken


def voiced(clip: np.ndarray) -> tuple[int, int]:
    """The first and last sample of a synthesized clip's speech: louder than -50 dBFS. The synthesizers add their
    own silence inside the clip's edges (espeak-ng about 0.45 s at the end, flite 0.15 s of faint breath), which
    would otherwise count as speech and flatter every final by that much."""
    loud = np.flatnonzero(np.abs(clip) > VOICED_LEVEL)
    if not len(loud):
        raise ValueError("the synthesizer returned silence")
    return int(loud[0]), int(loud[-1]) + 1


def frames_of(audio: np.ndarray, codec: str) -> list[bytes]:
    if codec == "opus":
        return opus_packets(audio, bitrate=16_000)
    data = pcm16(audio)
    step = int(FRAME_S * SAMPLE_RATE) * 2
    return [data[at : at + step] for at in range(0, len(data), step)]


async def one_stream(url: str, frames: list[bytes], spoken: list[Spoken]) -> StreamResult:
    """Stream ``frames`` in real time and time what comes back; a failure is recorded, not raised."""
    result = StreamResult(seconds=len(frames) * FRAME_S)
    try:
        await _stream(url, frames, spoken, result)
    except (OSError, ConnectionClosed) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def run_level(url: str, clips: list[tuple[list[bytes], list[Spoken]]], level: int) -> list[StreamResult]:
    """Stream ``clips[:level]`` to ``url`` all at once, each in real time."""

    async def run() -> list[StreamResult]:
        return await asyncio.gather(*(one_stream(url, *clips[i]) for i in range(level)))

    return asyncio.run(run())


async def _stream(url: str, frames: list[bytes], spoken: list[Spoken], result: StreamResult) -> None:
    arrivals: dict[int, list[float]] = {}  # utterance -> partial arrival times, seconds into the stream
    finals: list[tuple[float, dict]] = []
    async with connect(url, max_size=2**20) as ws:
        json.loads(await ws.recv())
        started = time.monotonic()

        async def receive() -> None:
            async for raw in ws:
                message, at = json.loads(raw), time.monotonic() - started
                if message["type"] == "partial":
                    arrivals.setdefault(message["utterance"], []).append(at)
                elif message["type"] == "final":
                    finals.append((at, message))

        receiver = asyncio.create_task(receive())
        for index, frame in enumerate(frames):
            await ws.send(frame)
            if (lag := started + (index + 1) * FRAME_S - time.monotonic()) > 0:
                await asyncio.sleep(lag)
        await ws.send(json.dumps({"type": "stop"}))
        await receiver
        result.close_code = ws.close_code
    result.partials = sum(len(times) for times in arrivals.values())
    for at, final in finals:
        held = [s for s in spoken if final["start_s"] <= s.end <= final["end_s"] + FRAME_S]
        if not held:
            continue  # an utterance of noise or a cut, not a sentence's end
        result.finals.append(at - held[-1].end)
        first = next(s for s in spoken if s.end >= final["start_s"])
        partials = [t for t in arrivals.get(final["utterance"], []) if t <= held[-1].end]
        if partials:
            result.first_partials.append(partials[0] - first.start)
        marks = [first.start, *partials]
        result.partial_gaps += [b - a for a, b in itertools.pairwise(marks)]


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def main(argv: list[str] | None = None) -> list[Level]:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,2,3,4,5", help="concurrency levels, ascending (default 1,2,3,4,5)")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per stream and level (default 30)")
    parser.add_argument("--threads", type=int, default=2, help="SPEECH_INFERENCE_THREADS of the server (default 2)")
    parser.add_argument(
        "--model-threads", type=int, default=None, help="SPEECH_MODEL__THREADS, per decode (default: one per CPU)"
    )
    parser.add_argument("--target", type=float, default=1.5, help="p95 final that keeps up, in s (default 1.5)")
    parser.add_argument("--codec", choices=("pcm16", "opus"), default="pcm16", help="what clients send")
    parser.add_argument("--language", default="en", help="the stream's language parameter; 'detect' sends none")
    parser.add_argument("--profile", default="base", help="bundled model profile (base, tiny.en)")
    parser.add_argument(
        "--speculative-final-ms", type=int, default=200, help="SPEECH_STREAM__SPECULATIVE_FINAL_MS; 0 turns it off"
    )
    parser.add_argument(
        "--end-silence-ms", type=int, default=600, help="SPEECH_STREAM__END_SILENCE_MS: silence that ends an utterance"
    )
    parser.add_argument(
        "--final-window-pad-s",
        default=StreamSettings.model_fields["final_window_pad_s"].default,
        help="SPEECH_STREAM__FINAL_WINDOW_PAD_S: silence a final's window is fitted with; 'off' for 30 s windows",
    )
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.quick:
        args.streams, args.seconds = QUICK["streams"], QUICK["seconds"]
    levels = sorted(int(n) for n in args.streams.split(","))
    name = "whisper-base" if args.profile == "base" else f"whisper-{args.profile}"
    settings = Settings(
        model=ModelSettings(name=name, profile=args.profile, threads=args.model_threads),
        inference_threads=args.threads,
        grpc=GrpcSettings(port=0),
        tts=TtsSettings(enabled=False),  # no voice to load and warm up: streams never synthesize
        stream=StreamSettings(
            max_sessions=max(levels),
            speculative_final_ms=args.speculative_final_ms or None,
            end_silence_ms=args.end_silence_ms,
            final_window_pad_s=args.final_window_pad_s,
        ),
    )
    talks = [conversation(args.seconds, offset) for offset in range(max(levels))]
    clips = [(frames_of(audio, args.codec), spoken) for audio, spoken in talks]
    query = f"?codec={args.codec}" + ("" if args.language == "detect" else f"&language={args.language}")
    machine = _machine()
    print(
        f"{args.seconds:g} s of speech per stream ({args.codec}), {args.threads} inference threads "
        f"({args.model_threads or 'one per CPU'} each), {name}; "
        f"{machine['cpus']} CPUs, load average {machine['load_average']}"
    )
    header = "streams finals  final p50  p95  first partial p50  p95  partial gap p50  p95  cpu/s  keeps up"
    print(header)
    rows: list[Level] = []
    with live_server(settings) as server:
        for level in levels:
            shed_before, cpu_before = _shed(scrape(server.base_url)), _cpu_seconds()

            results = run_level(server.ws_url + query, clips, level)
            finals = [d for r in results for d in r.finals]
            firsts = [d for r in results for d in r.first_partials]
            gaps = [d for r in results for d in r.partial_gaps]
            row = Level(
                streams=level,
                finals=len(finals),
                final_p50=percentile(finals, 50),
                final_p95=percentile(finals, 95),
                first_partial_p50=percentile(firsts, 50),
                first_partial_p95=percentile(firsts, 95),
                partial_gap_p50=percentile(gaps, 50),
                partial_gap_p95=percentile(gaps, 95),
                partials_per_s=round(sum(r.partials for r in results) / sum(r.seconds for r in results), 3),
                shed=_shed(scrape(server.base_url)) - shed_before,
                cpu_per_stream_s=round((_cpu_seconds() - cpu_before) / sum(r.seconds for r in results), 3),
                keeps_up=False,
            )
            row.keeps_up = (
                all(r.close_code == 1000 for r in results)
                and row.final_p95 <= args.target
                and row.partial_gap_p50 <= 1.0
            )
            rows.append(row)
            print(
                f"{level:>7} {row.finals:>6} {row.final_p50:>9.2f}s {row.final_p95:>4.2f}s "
                f"{row.first_partial_p50:>17.2f}s {row.first_partial_p95:>4.2f}s {row.partial_gap_p50:>15.2f}s "
                f"{row.partial_gap_p95:>4.2f}s {row.cpu_per_stream_s:>6.2f}  {'yes' if row.keeps_up else 'no'}"
            )
    capacity = _largest(rows, lambda r: r.keeps_up)
    fast = _largest(rows, lambda r: r.keeps_up and r.final_p95 <= 0.8)
    print(f"capacity: {capacity} real-time streams keep up (finals p95 <= {args.target:g} s, a partial a second)")
    print(f"capacity with finals p95 <= 0.8 s: {fast}")
    report = {
        "machine": machine,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "rows": [asdict(row) for row in rows],
        "capacity": capacity,
        "capacity_800ms": fast,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return rows


def _largest(rows: list[Level], passes) -> int:
    best = 0
    for row in rows:
        if not passes(row):
            break
        best = row.streams
    return best


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _shed(samples: dict) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "speech_partials_dropped_total" and ("reason", "overload") in labels
    )


if __name__ == "__main__":
    main()
