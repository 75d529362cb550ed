"""`python -m infra.rollback`: which regions, in what order, to which version; the live model run is the drill's
(bench/rollback_drill.py, smoke-tested in tests/serving/test_rollback_drill.py). The image rollback runs
infra.release's gate, here a fake region per stack as in tests/infra/test_release.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from contract.topology import DEFAULT_TOPOLOGY, TopologyError
from infra import release, rollback
from infra.deploy_order import StackTarget, deploy_waves
from infra.project import REPOSITORY

OLD_IMAGE = "ghcr.io/speech-platform/serving:0.0.9"
DOMAIN = "speech.example.com"


def _deploy_order() -> list[str]:
    return [t.stack for t in deploy_waves().regional]


def _regions(keys: list[str]):
    return tuple(DEFAULT_TOPOLOGY.region(key) for key in keys)


def test_all_regions_roll_back_in_the_deploy_order_the_global_stack_documents():
    order = _regions(_deploy_order())
    assert [r.key for r in rollback.regions_to_roll(order, None, DEFAULT_TOPOLOGY)] == _deploy_order()


def test_a_jurisdiction_rolls_back_only_its_own_regions_in_deploy_order():
    order = _regions(_deploy_order())
    assert [r.key for r in rollback.regions_to_roll(order, "eu", DEFAULT_TOPOLOGY)] == ["eu-west"]
    with pytest.raises(TopologyError, match="unknown jurisdiction 'mars'"):
        rollback.regions_to_roll(order, "mars", DEFAULT_TOPOLOGY)


@pytest.mark.parametrize(
    ("current", "store", "expected"),
    [("2.0.0", ["1.0.0", "1.1.0", "2.0.0"], "1.1.0"), ("1.1.0", ["1.0.0", "1.1.0", "2.0.0"], "1.0.0")],
)
def test_the_previous_version_is_the_newest_the_store_holds_below_the_current_one(current, store, expected):
    assert rollback.previous_version(current, store) == expected


@pytest.mark.parametrize(
    ("current", "store", "message"),
    [("1.0.0", ["1.0.0", "2.0.0"], "no version older than '1.0.0'; name one with --to"),
     ("3.0.0", ["1.0.0", "2.0.0"], "'3.0.0' is not in the store (1.0.0, 2.0.0)")],
)  # fmt: skip
def test_without_an_older_version_the_rollback_asks_for_one(current, store, message):
    with pytest.raises(rollback.RollbackError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rollback.previous_version(current, store)


def test_each_region_is_reached_on_its_regional_hostname_unless_replicas_are_named():
    regions = _regions(_deploy_order())
    plans = rollback.plan(regions, "speech.example.com", {"eu-west": ["http://10.0.3.7:8000", "http://10.0.4.2:8000"]})
    by_region = {p.region: p.endpoints for p in plans}
    assert by_region["us-west"] == ("https://us-west.speech.example.com",)
    assert by_region["eu-west"] == ("http://10.0.3.7:8000", "http://10.0.4.2:8000")
    assert [p.region for p in plans] == _deploy_order()


def test_an_endpoint_for_a_region_outside_the_rollback_is_refused():
    with pytest.raises(rollback.RollbackError, match="--endpoint names us-west, which this rollback does not touch"):
        rollback.plan(_regions(["eu-west"]), "speech.example.com", {"us-west": ["http://127.0.0.1:1"]})


def test_the_command_needs_an_admin_key_and_says_where_to_put_it(monkeypatch, capsys):
    monkeypatch.delenv(rollback.ADMIN_KEY_VARIABLE, raising=False)
    assert rollback.main(["--jurisdiction", "eu"]) == 1
    assert "no admin key: pass --admin-key-file or set SPEECH_ADMIN_KEY" in capsys.readouterr().err


def test_an_unreachable_region_stops_the_rollback_naming_it(monkeypatch, capsys):
    monkeypatch.setenv(rollback.ADMIN_KEY_VARIABLE, "admin")
    assert rollback.main(["--all", "--endpoint", "us-west=http://127.0.0.1:9"]) == 1
    assert "http://127.0.0.1:9/v1/models" in capsys.readouterr().err


@dataclass
class FakeRegions:
    """Each region's Rollouts verdict and its replicas' readiness, which a deploy may change."""

    serving: dict[str, str | None]  # endpoint -> the model version it reports ready on
    failing: set[str] = field(default_factory=set)
    after: dict[str, str | None] = field(default_factory=dict)  # stack -> what its replicas report once deployed
    asked: list[tuple[str, release.Change]] = field(default_factory=list)

    def release(self, target: StackTarget, rollouts: Sequence[str], change: release.Change) -> release.Verdict:
        self.asked.append((target.stack, change))
        if target.stack in self.failing:
            return release.Verdict(False, "rollout 'speech-serving' aborted: metric error-rate assessed Failed")
        if target.stack in self.after:
            for endpoint in _endpoints(target.stack):
                self.serving[endpoint] = self.after[target.stack]
        return release.Verdict(True, "speech-serving healthy")

    def ready(self, endpoint: str) -> str | None:
        return self.serving[endpoint]


def _endpoints(stack: str) -> tuple[str, ...]:
    return (f"https://{stack}.{DOMAIN}",)


def _image_rollback(regions: FakeRegions, jurisdiction: str | None, wait_s: float = 5.0):
    chosen = rollback.regions_to_roll(_regions(_deploy_order()), jurisdiction, DEFAULT_TOPOLOGY)
    plans = rollback.plan(chosen, DOMAIN)
    gate = rollback.ReadyOnSameModel(
        regions,
        {p.region: p.endpoints for p in plans},
        {p.region: "1.0.0" for p in plans},
        ready=regions.ready,
        wait_s=wait_s,
        poll_s=0,
    )
    targets = rollback.image_targets(plans, REPOSITORY, DEFAULT_TOPOLOGY)
    return release.release(targets, release.Change(image=OLD_IMAGE), gate, lambda stack: ("speech-serving",))


def _serving(version: str | None = "2.0.0") -> dict[str, str | None]:
    return {_endpoints(stack)[0]: version for stack in _deploy_order()}


def test_an_image_rollback_sets_only_the_image_in_every_region_in_deploy_order():
    regions = FakeRegions(_serving())
    results = _image_rollback(regions, None)
    assert [stack for stack, _ in regions.asked] == ["us-west", "ap-northeast", "eu-west"]
    assert {change for _, change in regions.asked} == {release.Change(image=OLD_IMAGE)}
    assert all(r.verdict is not None and r.verdict.promoted for r in results)
    assert results[-1].verdict is not None and "ready on model 2.0.0" in results[-1].verdict.detail


def test_an_eu_image_rollback_touches_only_the_eu_regions():
    regions = FakeRegions(_serving())
    results = _image_rollback(regions, "eu")
    assert [stack for stack, _ in regions.asked] == ["eu-west"]
    assert [r.stack for r in results] == ["eu-west"]


def test_the_eu_image_rollback_plan_prints_only_eu_stack_commands_and_needs_no_key(monkeypatch, capsys):
    monkeypatch.delenv(rollback.ADMIN_KEY_VARIABLE, raising=False)
    assert rollback.main(["--jurisdiction", "eu", "--image", OLD_IMAGE, "--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    stacks = {line.split("--stack ")[1].split()[0] for line in lines if "--stack" in line}
    assert stacks == {"organization/speech-platform/eu-west"}
    assert f"pulumi config set --path speech:image {OLD_IMAGE} --stack organization/speech-platform/eu-west" in lines
    assert lines[-1].startswith("# then wait until https://eu-west.speech.example.com/readyz")


def test_a_failed_rollout_stops_the_image_rollback_and_no_later_region_is_touched():
    regions = FakeRegions(_serving(), failing={"ap-northeast"})
    results = _image_rollback(regions, None)
    assert [stack for stack, _ in regions.asked] == ["us-west", "ap-northeast"]
    assert [(r.stack, r.verdict and r.verdict.promoted) for r in results] == [
        ("us-west", True),
        ("ap-northeast", False),
        ("eu-west", None),
    ]
    text = release.report(results, action="rollback", undone="not rolled back")
    assert "eu-west: not rolled back (an earlier region stopped the rollback)" in text


def test_a_region_whose_model_changed_with_the_image_stops_the_rollback():
    regions = FakeRegions(_serving(), after={"us-west": "1.0.0"})
    results = _image_rollback(regions, None, wait_s=0)
    assert [stack for stack, _ in regions.asked] == ["us-west"]
    verdict = results[0].verdict
    assert verdict is not None and not verdict.promoted
    assert "reports ready on model 1.0.0 after 0 s; expected ready on model 2.0.0" in verdict.detail
    assert [r.verdict for r in results[1:]] == [None, None]


def test_a_region_not_ready_before_the_rollback_must_come_back_on_its_pinned_model():
    regions = FakeRegions(_serving(None), after={"us-west": "1.0.0", "ap-northeast": "2.0.0"})
    results = _image_rollback(regions, None, wait_s=0)
    assert [(r.stack, r.verdict and r.verdict.promoted) for r in results] == [
        ("us-west", True),
        ("ap-northeast", False),
        ("eu-west", None),
    ]


def test_an_image_rollback_refuses_a_model_version_and_a_model_rollback_refuses_plan(capsys):
    for argv in (["--all", "--image", OLD_IMAGE, "--to", "1.0.0"], ["--all", "--plan"]):
        with pytest.raises(SystemExit) as exited:
            rollback.main(argv)
        assert exited.value.code == 2
    assert "--image rolls back the image and keeps the model" in capsys.readouterr().err


@dataclass
class FakeReplica:
    """A serving replica's model routes on loopback: what it serves, what its store holds, what it was told."""

    current: str = "2.0.0"
    store: tuple[str, ...] = ("1.0.0", "2.0.0")
    reloads: list[str] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == rollback.MODELS_PATH:
                    self._answer({"current": {"version": replica.current}, "store": {"versions": replica.store}})
                else:
                    self._answer({"status": "ready", "model_version": replica.current})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                replica.reloads.append(body["version"])
                replica.current = body["version"]
                self._answer({"version": body["version"]})

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def replica() -> Iterator[tuple[FakeReplica, str]]:
    fake = FakeReplica()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_without_image_the_rollback_reloads_the_previous_model_and_touches_no_stack(replica, monkeypatch, capsys):
    fake, url = replica
    stack_files = {p: p.read_text() for p in REPOSITORY.root.glob("Pulumi.*.yaml")}
    monkeypatch.setenv(rollback.ADMIN_KEY_VARIABLE, "admin")
    assert rollback.main(["--jurisdiction", "eu", "--endpoint", f"eu-west={url}", "--json"]) == 0
    assert fake.reloads == ["1.0.0"]
    out = capsys.readouterr().out
    assert [r["current"] for r in json.loads(out[out.index("{\n") :])["replicas"]] == ["1.0.0"]
    assert {p: p.read_text() for p in stack_files} == stack_files
