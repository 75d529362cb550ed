"""Failover drill: three regional servers on loopback, callers from several areas, and eu-west killed under load.

    python -m bench.failover [--quick] [--out bench/results/failover.json]

Three ``python -m serving`` processes are configured as the default topology's regions (``SPEECH_REGION`` us-west-2,
eu-west-1, ap-northeast-1; tiny.en, one inference thread each, so three fit on 2 cores; no voice). Callers use
:class:`speech_client.AsyncSpeechClient` from their areas, each sending short clips back to back: an EU user, an EU
tenant travelling in North America (its key's home is the EU), an unrestricted caller in Africa (eu-west first), and
callers in North America and Asia. Mid-run eu-west is killed outright (SIGKILL: a region failing, not draining),
later restarted on the same port, and the run goes on until the callers' breakers have brought it back.
``--quick`` shortens the phases, paces each caller to a request every 3 s at most, sends a shorter sentence and has
the servers decode as the test suite's do: the same checks on a fraction of the CPU.

The drill passes (exit 0) only when: no EU-bound caller was ever answered outside the EU, no non-EU server ever saw an
EU tenant's request (its ``speech_residency_refusals_total{jurisdiction="eu"}`` stays 0: the servers know the EU key's
home), EU-bound callers failed only cleanly (``NoRegionAvailable``) while eu-west was down, every non-EU request
succeeded, the Africa caller was served along its chain while eu-west was down, and EU callers were served again
after recovery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import secrets
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import report
from bench.asr_speed import load_test_helpers
from bench.servers import ServerProcess
from contract.service import METRICS_PATH
from contract.topology import DEFAULT_TOPOLOGY
from serving.build.export import ensure_bundled_model
from speech_client import (
    AsyncSpeechClient,
    BreakerPolicy,
    Caller,
    NoRegionAvailable,
    ResidencyError,
    RetryPolicy,
    SpeechClientError,
    chain_for,
)
from tests.serving.server_fixtures import decoding_env, wav_bytes

STOPPED = "eu-west"
PHASES = ("baseline", "switch", "outage", "restarting", "recovered")
SWITCH_S = 3.0  # the first seconds after the kill: what callers see while their breakers learn
CALLERS: dict[str, tuple[Caller, bool]] = {  # name -> (caller, whether it holds an EU tenant's key)
    "EU user": (Caller(continent="EU"), True),
    "EU tenant in NA": (Caller(continent="NA", jurisdiction="eu"), True),
    "Africa": (Caller(continent="AF"), False),
    "North America": (Caller(continent="NA"), False),
    "Asia": (Caller(continent="AS"), False),
}
BREAKER = BreakerPolicy(failure_threshold=2, reset_timeout_s=2.0)
RETRY = RetryPolicy(attempts_per_region=2, base_delay_s=0.05, max_delay_s=0.5, max_retry_after_s=1.0)


@dataclass(frozen=True)
class Durations:
    baseline_s: float
    outage_s: float  # from the kill to the restart, the switch included
    recovery_s: float  # at least this long after eu-west is ready again, and until the EU-bound callers are back
    # The least time between the starts of a caller's requests; 0: back to back. Paced callers still reach every
    # phase and every server, which is all the checks ask, without the full load that keeps the cores busy
    # (restarting eu-west included) the whole run.
    pace_s: float = 0.0


FULL = Durations(15.0, 30.0, 20.0)
QUICK = Durations(2.0, 4.0, 1.0, pace_s=3.0)
# ``--quick`` proves the routing, not the speed: its servers decode as the test suite's do (greedy, on windows fitted
# with 5 s of silence, one intra-op thread), about a third of the CPU per request of the defaults the full run keeps.
QUICK_MODEL = decoding_env()
# What every caller sends. The checks are about who answered, never what: ``--quick`` sends a sentence of about 1.7 s,
# whose fitted window (7 s) costs each decode about a third less than the 3.2 s one's (9 s).
CLIP = "Rice is often served in round bowls."
QUICK_CLIP = "Good morning."
RECOVERY_WAIT_S = 120.0  # the longest the run waits for EU-bound callers to be served in the EU again


@dataclass
class Request:
    caller: str
    started: float
    latency_s: float
    region: str | None  # who answered; None when it failed
    error: str | None = None
    phase: str = ""


class Timeline:
    def __init__(self) -> None:
        self.killed = self.restarting = self.ready = float("inf")

    def phase(self, at: float) -> str:
        if at < self.killed:
            return "baseline"
        if at < self.killed + SWITCH_S:
            return "switch"
        if at < self.restarting:
            return "outage"
        return "restarting" if at < self.ready else "recovered"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short phases, paced callers, a shorter clip, greedy decoding on fitted windows (CI)",
    )
    parser.add_argument("--workers", type=int, default=1, help="requests in flight per caller (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default bench/results/failover.json)")
    args = parser.parse_args(argv)
    durations = QUICK if args.quick else FULL
    machine = report.machine()
    print(report.machine_line(machine))
    helpers = load_test_helpers()
    clip = wav_bytes(helpers.synthesize(QUICK_CLIP if args.quick else CLIP, engine="flite"))
    keys = {False: secrets.token_urlsafe(16), True: secrets.token_urlsafe(16)}
    key_hashes = f"{_digest(keys[False])},{_digest(keys[True])} jurisdiction=eu"
    ensure_bundled_model("tiny.en")  # servers only load a built model; a fresh checkout builds it here once
    model = QUICK_MODEL if args.quick else {}
    servers = {r.key: ServerProcess(r.key, _env(r.aws_region, key_hashes) | model) for r in DEFAULT_TOPOLOGY.regions}
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server.start())
        for server in servers.values():
            server.wait_ready()
        print("three regions ready: " + ", ".join(f"{k} {s.base_url}" for k, s in servers.items()))
        timeline = Timeline()
        requests = asyncio.run(_drill(servers, keys, clip, durations, args.workers, timeline))
        refusals = {k: _eu_refusals(s.base_url) for k, s in servers.items() if k != STOPPED}
    for request in requests:
        # Counted where it ended: a request in flight when eu-west died belongs to the switch, not the baseline.
        request.phase = timeline.phase(request.started + request.latency_s)
    checks = _checks(requests, refusals)
    summary = _summary(requests)
    _print(summary, checks)
    path = report.write(
        "failover",
        {
            "command": "python -m bench.failover " + " ".join(argv if argv is not None else sys.argv[1:]),
            "measured": "under load (shared machine)" if machine["load_average"][0] > 1 else "quiet machine",
            "machine": machine,
            "durations": asdict(durations),
            "server_model": model or "production defaults (beam 5, 30 s windows, intra-op threads per CPU)",
            "switch_s": SWITCH_S,
            "breaker": asdict(BREAKER),
            "retry": asdict(RETRY),
            "restart_to_ready_s": round(timeline.ready - timeline.restarting, 2),
            "eu_refusals_on_non_eu_servers": refusals,
            "checks": checks,
            "summary": summary,
        },
        args.out,
    )
    print(f"results: {path}")
    return 0 if all(c["passed"] for c in checks) else 1


def _env(aws_region: str, key_hashes: str) -> dict[str, str]:
    return {
        "SPEECH_REGION": aws_region,
        "SPEECH_PUBLIC_DOMAIN": "speech.example.com",
        "SPEECH_AUTH__API_KEY_HASHES": key_hashes,
        "SPEECH_MODEL__NAME": "whisper-tiny.en",
        "SPEECH_MODEL__PROFILE": "tiny.en",
        "SPEECH_INFERENCE_THREADS": "1",
        "SPEECH_TTS__ENABLED": "false",  # the drill only transcribes; a voice would only slow every start
    }


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def _drill(
    servers: dict[str, ServerProcess],
    keys: dict[bool, str],
    clip: bytes,
    durations: Durations,
    workers: int,
    timeline: Timeline,
) -> list[Request]:
    endpoints = {k: s.base_url for k, s in servers.items()}
    requests: list[Request] = []
    stop = asyncio.Event()
    clients = {
        name: AsyncSpeechClient(endpoints, caller=caller, api_key=keys[is_eu], retry=RETRY, breaker=BREAKER)
        for name, (caller, is_eu) in CALLERS.items()
    }

    async def caller_loop(name: str, client: AsyncSpeechClient) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                region: str | None = (await client.transcribe(clip)).region
                error = None
            except NoRegionAvailable:
                region, error = None, "NoRegionAvailable"
            except ResidencyError as exc:
                region, error = None, f"ResidencyError: {exc}"
            except (SpeechClientError, httpx.HTTPError) as exc:
                region, error = None, f"{type(exc).__name__}: {exc}"
            requests.append(Request(name, started, time.monotonic() - started, region, error))
            backoff = 0.2 if error is not None else 0.0  # a failing caller backs off rather than spinning
            await asyncio.sleep(max(backoff, started + durations.pace_s - time.monotonic()))

    tasks = [asyncio.create_task(caller_loop(n, c)) for n, c in clients.items() for _ in range(workers)]
    await asyncio.sleep(durations.baseline_s)
    servers[STOPPED].kill()
    timeline.killed = time.monotonic()
    print(f"{STOPPED} killed")
    await asyncio.sleep(durations.outage_s)
    timeline.restarting = time.monotonic()
    servers[STOPPED].start()
    await asyncio.to_thread(servers[STOPPED].wait_ready)
    timeline.ready = time.monotonic()
    print(f"{STOPPED} restarted and ready after {timeline.ready - timeline.restarting:.1f} s")
    await asyncio.sleep(durations.recovery_s)
    deadline = time.monotonic() + RECOVERY_WAIT_S
    while not _eu_served_again(requests, timeline.ready) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # their breakers' half-open probes bring them back; the checks judge a miss
    stop.set()
    await asyncio.gather(*tasks)
    for client in clients.values():
        await client.aclose()
    return requests


def _eu_served_again(requests: list[Request], ready: float) -> bool:
    """Whether every EU-bound caller has had an answer from the EU that ended after eu-west was ready again."""
    eu_regions = {r.key for r in DEFAULT_TOPOLOGY.regions_in("eu")}
    served = {r.caller for r in requests if r.region in eu_regions and r.started + r.latency_s >= ready}
    return {name for name, (_, is_eu) in CALLERS.items() if is_eu} <= served


def _eu_refusals(base_url: str) -> float:
    text = httpx.get(base_url + METRICS_PATH, timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "speech_residency_refusals_total" and sample.labels.get("jurisdiction") == "eu"
    )


def _checks(requests: list[Request], refusals: dict[str, float]) -> list[dict[str, Any]]:
    eu_regions = {r.key for r in DEFAULT_TOPOLOGY.regions_in("eu")}
    eu_bound = {name for name, (_, is_eu) in CALLERS.items() if is_eu}
    down = {"switch", "outage", "restarting"}
    outside = [r for r in requests if r.caller in eu_bound and r.region is not None and r.region not in eu_regions]
    unclean = [r for r in requests if r.caller in eu_bound and r.error not in (None, "NoRegionAvailable")]
    non_eu_errors = [r for r in requests if r.caller not in eu_bound and r.error is not None]
    moved = {
        name: Counter(r.region for r in requests if r.caller == name and r.phase in down)
        for name, (caller, is_eu) in CALLERS.items()
        if not is_eu and chain_for(DEFAULT_TOPOLOGY, caller)[0].key == STOPPED
    }
    back = [r for r in requests if r.caller in eu_bound and r.phase == "recovered" and r.region in eu_regions]
    return [
        _check("no EU-bound request was answered outside the EU", not outside, f"{len(outside)} answered outside"),
        _check(
            "no non-EU server saw an EU tenant's request",
            not any(refusals.values()),
            ", ".join(f"{k}: {v:g} refusals" for k, v in refusals.items()),
        ),
        _check(
            "EU-bound callers failed only cleanly", not unclean, "; ".join(sorted({r.error or "" for r in unclean}))
        ),
        _check(
            "every non-EU request succeeded",
            not non_eu_errors,
            "; ".join(sorted({r.error or "" for r in non_eu_errors})),
        ),
        _check(
            f"callers whose chain starts at {STOPPED} were served along it while it was down",
            all(c and STOPPED not in c and None not in c for c in moved.values()),
            "; ".join(f"{name}: {dict(c)}" for name, c in moved.items()),
        ),
        _check("EU-bound callers were served in the EU again after recovery", bool(back), f"{len(back)} served"),
    ]


def _check(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "passed": passed, "detail": detail}


def _summary(requests: list[Request]) -> list[dict[str, Any]]:
    rows = []
    for name in CALLERS:
        for phase in PHASES:
            picked = [r for r in requests if r.caller == name and r.phase == phase]
            if not picked:
                continue
            ok = [r.latency_s for r in picked if r.error is None]
            rows.append(
                {
                    "caller": name,
                    "phase": phase,
                    "requests": len(picked),
                    "errors": sum(r.error is not None for r in picked),
                    "served_by": dict(Counter(r.region for r in picked if r.region)),
                    "error_kinds": dict(Counter((r.error or "").split(":")[0] for r in picked if r.error)),
                    "p50_s": report.percentile(ok, 50),
                    "p95_s": report.percentile(ok, 95),
                    "max_s": max(ok) if ok else None,
                }
            )
    return rows


def _print(summary: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None:
    rows = [
        (
            s["caller"], s["phase"], s["requests"], s["errors"],
            " ".join(f"{k}:{v}" for k, v in s["served_by"].items()) or "-",
            s["p50_s"], s["p95_s"], s["max_s"],
        )
        for s in summary
    ]  # fmt: skip
    columns = ("caller", "phase", "requests", "errors", "served by", "p50 s", "p95 s", "max s")
    print(report.table(f"failover drill: {STOPPED} killed, then restarted", columns, rows))
    for check in checks:
        print(f"{'PASS' if check['passed'] else 'FAIL'}  {check['check']}  ({check['detail']})")


if __name__ == "__main__":
    sys.exit(main())
