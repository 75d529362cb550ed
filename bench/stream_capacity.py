"""How many real-time streams one server keeps up with: the measurement behind ``SPEECH_STREAM__MAX_SESSIONS``.

    python -m bench.stream_capacity [--streams 1,2,3,4] [--seconds 20] [--threads 2] [--target 1.5]

For each level N, N clients stream synthesized speech (sentences with pauses, as people talk) in real time, all at
once, to the real server on loopback. A final's *delay* is the wall time from the moment its audio, up to where the
VAD ended the utterance, had been sent, to the moment the final arrived: the server's own lag, excluding the
``end_silence_ms`` a speaker must pause. A level keeps up when its 95th-percentile delay is within ``--target``
seconds; the capacity is the largest level that keeps up (and every lower level too). Partials per stream-second
show how much partial cadence was shed to keep finals on time, and CPU seconds per stream-second (this process:
server and clients; the clients' share is small) what a stream costs, a figure that load from other processes
hardly changes.

The machine is measured as it is: on a shared machine, other load makes the numbers pessimistic. Keep the run
short there (``--streams 1,2,3 --seconds 15``) and measure final numbers on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.client import connect

from serving.engine import SAMPLE_RATE
from serving.settings import GrpcSettings, ModelSettings, Settings, StreamSettings
from tests.serving.conftest import TtsEngine, load_sentences, synthesize
from tests.serving.server_fixtures import live_server, pcm16, scrape, silence

FRAME_SECONDS = 0.02
PAUSE_S = 1.2  # between sentences: longer than the default end_silence_ms, so every sentence is an utterance


@dataclass
class StreamResult:
    final_delays: list[float] = field(default_factory=list)
    partials: int = 0
    seconds: float = 0.0
    close_code: int | None = None


def conversation(seconds: float, offset: int) -> np.ndarray:
    """About ``seconds`` of English sentences from the test set, flite and espeak-ng in turn, with pauses."""
    texts = [s.text for s in load_sentences() if s.language == "en"]
    parts: list[np.ndarray] = [silence(0.5)]
    index = offset
    while sum(len(p) for p in parts) < seconds * SAMPLE_RATE:
        engine: TtsEngine = "flite" if index % 2 else "espeak-ng"
        parts += [synthesize(texts[index % len(texts)], engine=engine), silence(PAUSE_S)]
        index += 1
    return np.concatenate(parts)


async def one_stream(url: str, audio: np.ndarray) -> StreamResult:
    result = StreamResult(seconds=len(audio) / SAMPLE_RATE)
    data = pcm16(audio)
    step = int(FRAME_SECONDS * SAMPLE_RATE) * 2
    async with connect(url, max_size=2**20) as ws:
        json.loads(await ws.recv())
        started = time.monotonic()

        async def receive() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "final":
                    result.final_delays.append(time.monotonic() - (started + message["end_s"]))
                elif message["type"] == "partial":
                    result.partials += 1

        receiver = asyncio.create_task(receive())
        for index, offset in enumerate(range(0, len(data), step)):
            await ws.send(data[offset : offset + step])
            lag = started + (index + 1) * FRAME_SECONDS - time.monotonic()
            if lag > 0:
                await asyncio.sleep(lag)
        await ws.send(json.dumps({"type": "stop"}))
        await receiver
        result.close_code = ws.close_code
    return result


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,2,3,4", help="concurrency levels to try, ascending (default 1,2,3,4)")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per stream and level (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="SPEECH_INFERENCE_THREADS of the server (default 2)")
    parser.add_argument("--target", type=float, default=1.5, help="p95 final delay that keeps up, in s (default 1.5)")
    args = parser.parse_args(argv)
    levels = sorted(int(n) for n in args.streams.split(","))
    stream = StreamSettings(max_sessions=max(levels))
    settings = Settings(model=ModelSettings(), inference_threads=args.threads, stream=stream, grpc=GrpcSettings(port=0))
    clips = [conversation(args.seconds, offset) for offset in range(max(levels))]
    print(f"{args.seconds:g} s of speech per stream, {args.threads} inference threads, target p95 {args.target:g} s")
    columns = ("streams", 7), ("finals", 6), ("p50 delay", 9), ("p95 delay", 9), ("partials/s", 10), ("shed", 6)
    print(" ".join(f"{name:>{width}}" for name, width in (*columns, ("cpu/s", 6))) + "  keeps up")
    capacity, is_keeping_up = 0, True
    with live_server(settings) as server:
        for level in levels:
            shed_before, cpu_before = _shed(scrape(server.base_url)), _cpu_seconds()

            async def run_level(level: int = level) -> list[StreamResult]:
                return await asyncio.gather(*(one_stream(server.ws_url, clips[i]) for i in range(level)))

            results = asyncio.run(run_level())
            delays = [d for r in results for d in r.final_delays]
            p95 = percentile(delays, 95)
            keeps_up = all(r.close_code == 1000 for r in results) and p95 <= args.target
            is_keeping_up = is_keeping_up and keeps_up
            if is_keeping_up:
                capacity = level
            partial_rate = statistics.mean(r.partials / r.seconds for r in results)
            cpu_per_stream_second = (_cpu_seconds() - cpu_before) / sum(r.seconds for r in results)
            shed = _shed(scrape(server.base_url)) - shed_before
            print(
                f"{level:>7} {len(delays):>6} {percentile(delays, 50):>8.2f}s {p95:>8.2f}s {partial_rate:>10.2f} "
                f"{shed:>6.0f} {cpu_per_stream_second:>6.2f}  {'yes' if keeps_up else 'no'}"
            )
    print(f"capacity: {capacity} concurrent real-time streams (SPEECH_STREAM__MAX_SESSIONS)")
    return 0


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
    sys.exit(main())
