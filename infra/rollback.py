"""``python -m infra.rollback``: put the previous model back in every region of a jurisdiction, or everywhere.

    python -m infra.rollback --jurisdiction eu            # each EU region to the store version before its current one
    python -m infra.rollback --all --to 2026.11.20         # every region to a named version
    python -m infra.rollback --all --endpoint us-west=http://10.0.3.7:8000 --endpoint us-west=http://10.0.4.2:8000
    python -m infra.rollback --jurisdiction eu --image ghcr.io/speech-platform/serving:0.1.0 [--plan]

Regions go one at a time, in `speech:deployOrder` (Pulumi.global.yaml, read through `infra.deploy_order`, never
retyped), the order a release took: the canary first. In each region, every replica (the regional hostname
`https://<region>.<speech:domain>` unless `--endpoint` names replicas) is asked for its models (`GET /v1/models`),
told to reload the target (`POST /v1/models/reload` with an admin key from `--admin-key-file` or
`$SPEECH_ADMIN_KEY`; listing models takes a transcription key, `--api-key-file` or `$SPEECH_API_KEY`, where the
region has keys), and polled until `/readyz` reports the target version; only then does the next region start.
The first region that fails stops the rollback, so regions after it keep what they serve, and the exit status is 1.

A reload is a hot swap: streams open during it finish on the version they started with (the serving registry's
leases), new ones get the target. It lasts until the pod restarts: pin `speech:model.version` in the region's stack
file and `pulumi up` to make it durable (docs/runbooks/SpeechErrorRateHigh.md).

With ``--image`` the image goes back instead, through each region's stack with infra.release's gate (set
`speech:image`, `pulumi up`, wait on `kubectl argo rollouts status`), in the same order and with the same stop at
the first failing region; the model stays: each region is done once its readiness reports ready on the model
version it served before. `--plan` prints the commands per region and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from contract.service import READINESS_PATH, regional_hostname
from contract.topology import DEFAULT_TOPOLOGY, Region, Topology
from infra import config, release
from infra.deploy_order import GLOBAL_STACK, StackTarget, deploy_waves
from infra.project import REPOSITORY, Project

ADMIN_KEY_VARIABLE = "SPEECH_ADMIN_KEY"
API_KEY_VARIABLE = "SPEECH_API_KEY"
MODELS_PATH = "/v1/models"
RELOAD_PATH = "/v1/models/reload"
# Pulling and warming a model takes a minute or two on a GPU node; a region slower than this is failing.
DEFAULT_WAIT_S = 600.0


class RollbackError(RuntimeError):
    """The rollback cannot start or cannot finish in a region; the message names the region and what to do."""


@dataclass(frozen=True)
class Keys:
    admin: str  # reloads
    api: str | None = None  # lists models, where the region has transcription keys


@dataclass(frozen=True)
class RegionPlan:
    region: str  # topology key
    endpoints: tuple[str, ...]  # base URLs of the replicas to roll back


@dataclass(frozen=True)
class ReplicaResult:
    region: str
    endpoint: str
    previous: str
    current: str
    seconds: float


def regions_to_roll(order: Sequence[Region], jurisdiction: str | None, topology: Topology) -> tuple[Region, ...]:
    """The regions of ``jurisdiction`` (None: every region), in ``order``."""
    if jurisdiction is None:
        return tuple(order)
    topology.jurisdiction(jurisdiction)  # an unknown code is a TopologyError naming the known ones
    chosen = tuple(r for r in order if r.jurisdiction == jurisdiction)
    if not chosen:
        raise RollbackError(f"speech:deployOrder lists no region of jurisdiction {jurisdiction!r}")
    return chosen


def previous_version(current: str, store_versions: Sequence[str]) -> str:
    """The newest store version older than ``current``; ``store_versions`` are oldest first, as the server lists."""
    if current not in store_versions:
        raise RollbackError(
            f"the serving version {current!r} is not in the store ({', '.join(store_versions) or 'empty'}); "
            "name the version to go back to with --to"
        )
    older = store_versions[: store_versions.index(current)]
    if not older:
        raise RollbackError(f"the store holds no version older than {current!r}; name one with --to")
    return older[-1]


def plan(
    regions: Sequence[Region], domain: str, endpoints: dict[str, list[str]] | None = None
) -> tuple[RegionPlan, ...]:
    """Each region's replicas: the ``endpoints`` given for it, else its regional hostname over HTTPS."""
    endpoints = endpoints or {}
    unknown = sorted(set(endpoints) - {r.key for r in regions})
    if unknown:
        raise RollbackError(
            f"--endpoint names {', '.join(unknown)}, which this rollback does not touch; it rolls back "
            f"{', '.join(r.key for r in regions)}"
        )
    return tuple(
        RegionPlan(r.key, tuple(endpoints.get(r.key) or [f"https://{regional_hostname(r.key, domain)}"]))
        for r in regions
    )


class Replica:
    """One serving replica's HTTP API, with the standard library only (the component library's dependencies)."""

    def __init__(self, base_url: str, keys: Keys, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._keys = keys
        self._timeout_s = timeout_s

    def _call(
        self, path: str, body: dict[str, Any] | None = None, key: str | None = None, timeout_s: float | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self._timeout_s) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise RollbackError(f"{self.base_url}{path}: {exc}") from exc

    def models(self) -> tuple[str, list[str]]:
        """(current version, the store's versions oldest first)."""
        status, body = self._call(MODELS_PATH, key=self._keys.api)
        if status != 200 or not body.get("current") or not body.get("store"):
            raise RollbackError(f"{self.base_url}{MODELS_PATH} answered {status}: {body.get('detail', body)}")
        return body["current"]["version"], list(body["store"]["versions"])

    def reload(self, version: str, timeout_s: float) -> None:
        """The replica answers once it has pulled, verified, loaded and warmed ``version``: minutes, not seconds."""
        status, body = self._call(RELOAD_PATH, {"version": version}, key=self._keys.admin, timeout_s=timeout_s)
        if status != 200:
            raise RollbackError(
                f"{self.base_url}{RELOAD_PATH} refused version {version}: {status} {body.get('detail')}"
            )

    def ready_version(self) -> str | None:
        return ready_version(self.base_url, self._timeout_s)


def ready_version(base_url: str, timeout_s: float = 30.0) -> str | None:
    """The model version a replica reports ready on; None while it is not ready or not reachable."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + READINESS_PATH, timeout=timeout_s) as response:
            return json.loads(response.read() or b"{}").get("model_version")
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError):
        return None  # a 503 while warming up, or a replica restarting: not ready yet


def roll_back(
    plans: Sequence[RegionPlan],
    keys: Keys,
    to: str | None = None,
    wait_s: float = DEFAULT_WAIT_S,
    report: Callable[[str], None] = lambda line: None,
    poll_s: float = 0.5,
) -> list[ReplicaResult]:
    """Roll every replica of each region back in turn; raises :class:`RollbackError` at the first that fails."""
    results: list[ReplicaResult] = []
    for region in plans:
        for endpoint in region.endpoints:
            started = time.monotonic()
            replica = Replica(endpoint, keys)
            current, store = replica.models()
            target = to or previous_version(current, store)
            if target not in store:
                raise RollbackError(f"{region.region} ({endpoint}): the store holds no version {target!r}: {store}")
            report(f"{region.region}: {endpoint} serves {current}; rolling back to {target}")
            deadline = started + wait_s
            if current != target:
                replica.reload(target, max(1.0, deadline - time.monotonic()))
            while replica.ready_version() != target:
                if time.monotonic() > deadline:
                    raise RollbackError(
                        f"{region.region} ({endpoint}) did not report {target} ready within {wait_s:g} s; regions "
                        "after it were not touched"
                    )
                time.sleep(poll_s)
            results.append(ReplicaResult(region.region, endpoint, current, target, time.monotonic() - started))
            report(f"{region.region}: {endpoint} ready on {target} after {results[-1].seconds:.1f} s")
    return results


@dataclass(frozen=True)
class ReadyOnSameModel:
    """A release gate for an image rollback: ``gate`` deploys the image and waits for the Rollouts; then every
    replica of the region must report ready on the model version the region served before.

    Pods of the old image load the stack's `speech:model.version`; where a model rollback was hot-swapped and never
    pinned, that is another version, and the image rollback would quietly undo the model rollback. Where no replica
    is ready beforehand (a bad image can do that), the stack's pinned version is the one expected.
    """

    gate: release.RegionGate
    endpoints: Mapping[str, Sequence[str]]  # region (= stack) -> replicas whose readiness decides
    pinned: Mapping[str, str]  # region -> its stack's speech:model.version
    ready: Callable[[str], str | None] = ready_version
    wait_s: float = DEFAULT_WAIT_S
    poll_s: float = 0.5
    dry_run: bool = False

    def release(self, target: StackTarget, rollouts: Sequence[str], change: release.Change) -> release.Verdict:
        endpoints = self.endpoints[target.stack]
        if self.dry_run:
            verdict = self.gate.release(target, rollouts, change)
            urls = " ".join(e.rstrip("/") + READINESS_PATH for e in endpoints)
            print(f"# then wait until {urls} reports ready on the model version served before")
            return verdict
        serving = {v for v in map(self.ready, endpoints) if v is not None}
        if len(serving) > 1:
            return release.Verdict(False, f"replicas serve models {', '.join(sorted(serving))}; roll the model first")
        expected = serving.pop() if serving else self.pinned[target.stack]
        verdict = self.gate.release(target, rollouts, change)
        if not verdict.promoted:
            return verdict
        deadline = time.monotonic() + self.wait_s
        for endpoint in endpoints:
            while (seen := self.ready(endpoint)) != expected:
                if time.monotonic() >= deadline:
                    return release.Verdict(
                        False,
                        f"{endpoint}{READINESS_PATH} reports {f'ready on model {seen}' if seen else 'not ready'} "
                        f"after {self.wait_s:g} s; expected ready on model {expected}, as before the rollback",
                    )
                time.sleep(self.poll_s)
        return release.Verdict(True, f"{verdict.detail}; ready on model {expected}")


def image_targets(plans: Sequence[RegionPlan], project: Project, topology: Topology) -> tuple[StackTarget, ...]:
    """The regional stacks of ``plans``, in deploy order."""
    chosen = {p.region for p in plans}
    return tuple(t for t in deploy_waves(topology, project).regional if t.stack in chosen)


def _roll_back_image(
    plans: Sequence[RegionPlan], image: str, args: argparse.Namespace, project: Project, topology: Topology
) -> int:
    change = release.Change(image=image)
    targets = image_targets(plans, project, topology)
    # Every stack is read with the image applied first, so a typo fails before the first region is touched.
    configs = {t.stack: release.regional_config(t.stack, project, topology, change) for t in targets}
    gate = ReadyOnSameModel(
        release.PulumiAndKubectl(args.timeout, dry_run=args.plan, cwd=project.root),
        {p.region: p.endpoints for p in plans},
        {stack: cfg.model.version for stack, cfg in configs.items()},
        wait_s=args.wait,
        dry_run=args.plan,
    )
    results = release.release(targets, change, gate, lambda stack: release.serving_rollouts(configs[stack]))
    if not args.plan:
        print(release.report(results, action="rollback", undone="not rolled back"))
    return 0 if all(r.verdict is not None and r.verdict.promoted for r in results) else 1


def _endpoints(values: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for value in values:
        region, sep, url = value.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise RollbackError(f"--endpoint {value!r} is not REGION=URL, e.g. eu-west=http://10.0.3.7:8000")
        found.setdefault(region, []).append(url)
    return found


def _key(path: Path | None, variable: str) -> str | None:
    return (path.read_text() if path is not None else os.environ.get(variable, "")).strip() or None


def _keys(admin_file: Path | None, api_file: Path | None) -> Keys:
    admin = _key(admin_file, ADMIN_KEY_VARIABLE)
    if admin is None:
        raise RollbackError(f"no admin key: pass --admin-key-file or set {ADMIN_KEY_VARIABLE}")
    return Keys(admin, _key(api_file, API_KEY_VARIABLE))


def main(argv: list[str] | None = None, project: Project = REPOSITORY, topology: Topology = DEFAULT_TOPOLOGY) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.rollback", description=__doc__.split("\n\n")[0])
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--jurisdiction", help="roll back every region of this jurisdiction (e.g. eu)")
    scope.add_argument("--all", action="store_true", help="roll back every region")
    parser.add_argument("--to", metavar="VERSION", help="the version to go back to (default: the one before current)")
    parser.add_argument("--endpoint", action="append", default=[], metavar="REGION=URL", help="a replica to reach")
    parser.add_argument("--admin-key-file", type=Path, help=f"file holding the admin key (else ${ADMIN_KEY_VARIABLE})")
    parser.add_argument("--api-key-file", type=Path, help=f"file holding an API key (else ${API_KEY_VARIABLE})")
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, help="seconds a replica gets to be ready")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--image", help="roll the serving image back to IMAGE (speech:image) instead; the model stays")
    parser.add_argument(
        "--timeout", type=int, default=release.DEFAULT_TIMEOUT_S, help="with --image: seconds to wait for each Rollout"
    )
    parser.add_argument("--plan", action="store_true", help="with --image: print the commands per region; run nothing")
    args = parser.parse_args(argv)
    if args.image and (args.to or args.json):
        parser.error("--image rolls back the image and keeps the model; run --to (or --json) as a separate rollback")
    if args.plan and not args.image:
        parser.error("--plan prints the stack commands of an --image rollback; a model rollback runs none")
    try:
        cfg = config.load(GLOBAL_STACK, project.stack_config(GLOBAL_STACK), topology)
        if not isinstance(cfg, config.GlobalConfig):
            raise RollbackError(f"stack {GLOBAL_STACK!r} is not the global stack (speech:scope: global)")
        regions = regions_to_roll(cfg.deploy_order, args.jurisdiction, topology)
        plans = plan(regions, cfg.domain, _endpoints(args.endpoint))
        if args.image:
            return _roll_back_image(plans, args.image, args, project, topology)
        started = time.monotonic()
        results = roll_back(plans, _keys(args.admin_key_file, args.api_key_file), args.to, args.wait, print)
    except (RollbackError, config.ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"seconds": time.monotonic() - started, "replicas": [asdict(r) for r in results]}, indent=2))
    else:
        print(f"rolled back {len(results)} replicas in {len(plans)} regions in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
