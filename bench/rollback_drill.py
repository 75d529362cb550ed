"""A rollback drill: three regions on loopback, live streams open, one command back to the previous model.

    python -m bench.rollback_drill [--quick] [--out bench/results/rollback_drill.json]

Each region of the topology gets a real server (``SPEECH_REGION`` set, so its bucket's jurisdiction is checked) on
loopback, serving from its own bucket in a model store (moto's S3 server on loopback) that holds two versions of the
tiny.en model, ``1.0.0`` and ``2.0.0``; each starts on the newest. With a stream open in every region (it speaks
in real time, keeps the stream open with silence through the rollback, then speaks again),
``python -m infra.rollback --all`` (the real command, its replicas named with ``--endpoint``) reverts
every region, in ``speech:deployOrder``, and waits until each region's readiness reports ``1.0.0``.

Measured: the end-to-end time of the command (target: under five minutes). Checked: the regions went in the
documented order, every stream open during the rollback finished normally with every final from the version it
started on (``2.0.0``: the engine lease holds it), and new work gets ``1.0.0``. The result goes to ``--out``; the
exit status is 1 when a check fails or the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import boto3
import httpx
import numpy as np

from contract.topology import DEFAULT_TOPOLOGY, Region
from infra import rollback
from infra.deploy_order import deploy_waves
from serving.build.export import ensure_bundled_model
from serving.settings import AuthSettings, GrpcSettings, ModelSettings, Settings, TtsSettings
from tests.serving.conftest import load_sentences, synthesize
from tests.serving.server_fixtures import (
    ADMIN_KEY,
    TEST_DECODING,
    LiveServer,
    digest,
    live_server,
    moto_store,
    publish_in_moto,
    silence,
    stream_audio,
)

NAME = "whisper-tiny.en"
OLD, NEW = "1.0.0", "2.0.0"
TARGET_S = 300.0
RESULTS = Path(__file__).parent / "results" / "rollback_drill.json"


@dataclass
class StreamReport:
    region: str
    started_on: str
    final_versions: list[str]
    finals: int
    close_code: int | None

    @property
    def is_ok(self) -> bool:
        return self.close_code == 1000 and self.finals > 0 and set(self.final_versions) == {self.started_on} == {NEW}


def _store(endpoint: str, model_dir: Path) -> dict[str, str]:
    """One bucket per region, in the region's own AWS region, holding OLD and NEW; region key -> bucket.

    Buckets are made through the S3 API; their objects are written straight into the moto backend that the loopback
    server runs in this process (``publish_in_moto``), each bucket's from the model directory and nothing copied
    between buckets (a model store is filled only from its own jurisdiction). Through the API (a PutObject per file
    of OLD, signed and read by the server, and a CopyObject per file for NEW) the three buckets cost 5.4 CPU-s of the
    quick drill's 27; written to the backend, under 2."""
    buckets = {}
    for region in DEFAULT_TOPOLOGY.regions:
        bucket = f"drill-models-{region.key}"
        s3 = boto3.client("s3", region_name=region.aws_region, endpoint_url=endpoint)
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region.aws_region})
        for version in (OLD, NEW):  # the manifests relabelled: the drill names its versions
            publish_in_moto(bucket, model_dir, NAME, version)
        buckets[region.key] = bucket
    return buckets


def _settings(region: Region, bucket: str, endpoint: str, cache: Path, quick: bool) -> Settings:
    # Quick: the model runs as the test servers run it (greedy batch decodes on windows fitted with 5 s, one thread),
    # which the warm-up of each of the six loads decodes with; the drill checks which version serves, not how well.
    decoding = TEST_DECODING if quick else {}
    return Settings(
        region=region.aws_region,
        model=ModelSettings(
            name=NAME, profile="tiny.en", bucket=bucket, endpoint_url=endpoint, cache_dir=cache, **decoding
        ),
        auth=AuthSettings(admin_key_hashes=[digest(ADMIN_KEY)]),
        grpc=GrpcSettings(port=0),
        # The drill's stores hold the ASR model only: it is what a rollback reverts here.
        tts=TtsSettings(enabled=False),
    )


@contextlib.contextmanager
def _regions(work: Path, quick: bool) -> Iterator[dict[str, LiveServer]]:
    """A serving replica per region, each on its own bucket of one loopback model store."""
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(moto_store())
        buckets = _store(endpoint, ensure_bundled_model("tiny.en"))
        servers = {}
        for region in DEFAULT_TOPOLOGY.regions:
            settings = _settings(region, buckets[region.key], endpoint, work / region.key, quick)
            servers[region.key] = stack.enter_context(live_server(settings))
        yield servers


def _speech(seconds: float) -> np.ndarray:
    """Sentences with pauses, at least ``seconds`` long: a speaker who keeps talking through the rollback."""
    parts, total = [], 0.0
    for index, sentence in enumerate(s for s in load_sentences() if s.language == "en"):
        clip = synthesize(sentence.text, engine="flite" if index % 2 else "espeak-ng")
        parts += [clip, silence(0.8)]
        total += len(clip) / 16_000 + 0.8
        if total >= seconds:
            break
    return np.concatenate(parts)


def _rollback_command(servers: dict[str, LiveServer]) -> tuple[int, float, list[str]]:
    """Run ``python -m infra.rollback --all`` against the loopback replicas: (exit status, seconds, output lines)."""
    argv = ["--all", *(f"--endpoint={key}={server.base_url}" for key, server in servers.items())]
    output = io.StringIO()
    os.environ[rollback.ADMIN_KEY_VARIABLE] = ADMIN_KEY
    started = time.monotonic()
    with contextlib.redirect_stdout(output):
        status = rollback.main(argv)
    return status, time.monotonic() - started, output.getvalue().splitlines()


async def _drill(servers: dict[str, LiveServer], speech_s: float) -> tuple[int, float, list[str], list[StreamReport]]:
    """Streams speak before the rollback, stay open (silence) through it, and speak again after it: their finals
    after the swap show which engine still serves them."""
    before, after = _speech(speech_s), _speech(1.0)
    # Finals only: which version decodes them is what the drill checks, and drafts would only take the CPU.
    urls = {key: server.ws_url + "?interim_results=false" for key, server in servers.items()}
    rolled_back = asyncio.get_running_loop().create_future()
    streams = {
        key: asyncio.create_task(stream_audio(url, before, then=(rolled_back, after), timeout_s=TARGET_S * 2))
        for key, url in urls.items()
    }
    while any(server.app.state.serving.streams.active == 0 for server in servers.values()):
        await asyncio.sleep(0.05)  # every region has its stream open before the rollback starts
    status, seconds, lines = await asyncio.to_thread(_rollback_command, servers)
    rolled_back.set_result(None)
    reports = []
    for key, task in streams.items():
        outcome = await task
        finals = outcome.of_type("final")
        reports.append(
            StreamReport(
                key, outcome.ready["model_version"], sorted({f["model_version"] for f in finals}), len(finals),
                outcome.close_code,
            )
        )  # fmt: skip
    return status, seconds, lines, reports


def run(quick: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="rollback-drill-") as work, _regions(Path(work), quick) as servers:
        before = {key: httpx.get(s.base_url + "/readyz").json()["model_version"] for key, s in servers.items()}
        status, seconds, lines, streams = asyncio.run(_drill(servers, 1.0 if quick else 20.0))
        after = {key: httpx.get(s.base_url + "/readyz").json()["model_version"] for key, s in servers.items()}
    order = [w.stack for w in (deploy_waves().canary, *deploy_waves().regions)]
    rolled = list(dict.fromkeys(line.split(":", 1)[0] for line in lines if " rolling back to " in line))
    checks = {
        "command_succeeded": status == 0,
        "started_on_new": set(before.values()) == {NEW},
        "regions_in_deploy_order": rolled == order,
        "every_region_ready_on_old": set(after.values()) == {OLD},
        "live_streams_finished_on_their_version": all(s.is_ok for s in streams),
        "under_five_minutes": seconds < TARGET_S,
    }
    return {
        "seconds": round(seconds, 2),
        "target_seconds": TARGET_S,
        "passed": all(checks.values()),
        "checks": checks,
        "deploy_order": order,
        "rolled_back": rolled,
        "versions": {"before": before, "after": after},
        "streams": [{**asdict(s), "ok": s.is_ok} for s in streams],
        "command_output": lines,
        "quick": quick,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollback_drill", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one sentence first instead of 20 s of speech, greedy batch decodes on one thread (the smoke test's)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where the result goes (default {RESULTS})")
    args = parser.parse_args(argv)
    result = run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    verdict = (
        "passed" if result["passed"] else "FAILED: " + ", ".join(k for k, ok in result["checks"].items() if not ok)
    )
    print(f"rollback of {len(result['rolled_back'])} regions in {result['seconds']:.1f} s ({verdict}); {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
