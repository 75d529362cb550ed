"""The model store client and hot swap, against a moto S3 server on loopback holding real model files.

Versions are the bundled tiny.en model's real files (the smallest: these tests move and load many copies) under
``models/whisper-tiny.en/<version>/`` with the version rewritten in
``manifest.json``, so every hash that is checked is a real one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from contract.topology import DEFAULT_TOPOLOGY
from serving.model_dir import MANIFEST_FILE, verify_model_dir
from serving.model_store import ModelStore, ModelStoreError, version_order
from serving.settings import Settings
from tests.serving.server_fixtures import (
    ADMIN_KEY,
    MOTO_ENV,
    digest,
    live_server,
    moto_store,
    publish_in_moto,
    sample,
    scrape,
    server_model,
    stream_audio,
    wav_bytes,
    with_silence,
)

REPO = Path(__file__).resolve().parents[2]
NAME = "whisper-tiny.en"
EU_BUCKET, US_BUCKET, JP_BUCKET = "speech-models-eu-west", "speech-models-us-west", "speech-models-ap-northeast"
VIRGINIA_BUCKET = "speech-models-virginia"  # us-east-1: no region of the topology
BAD_BUCKET = "speech-models-eu-west-bad"  # tampered and mislabelled versions, kept out of EU_BUCKET's "newest"
POLL_BUCKET = "speech-models-eu-west-poll"
ODD_BUCKET = "speech-models-eu-west-odd"  # prefixes that are not version names
SPEECH = "Please call Stella and ask her to bring these things with her from the store."
OTHER_SPEECH = "The weather forecast says it will rain heavily over the weekend."


@dataclass
class Store:
    endpoint: str
    s3: Any  # a boto3 client, untyped
    model_dir: Path  # the bundled tiny.en: every version's files

    def publish(self, bucket: str, version: str, manifest_version: str | None = None) -> None:
        """The bundled model under ``bucket``/``version``, its manifest relabelled and written last."""
        publish_in_moto(bucket, self.model_dir, NAME, version, manifest_version)


@pytest.fixture(scope="module")
def store(tiny_en_model_dir):
    with moto_store() as endpoint:
        s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=endpoint)
        for bucket, region in ((EU_BUCKET, "eu-west-1"), (US_BUCKET, "us-west-2"), (JP_BUCKET, "ap-northeast-1"),
                               (BAD_BUCKET, "eu-west-1"), (POLL_BUCKET, "eu-west-1"),
                               (ODD_BUCKET, "eu-west-1")):  # fmt: skip
            regional = boto3.client("s3", region_name=region, endpoint_url=endpoint)
            regional.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint).create_bucket(Bucket=VIRGINIA_BUCKET)
        # The bundled model, relabelled 1.0.0 whatever version the exporter gives it: these tests name versions.
        published = Store(endpoint, s3, tiny_en_model_dir)
        published.publish(EU_BUCKET, "1.0.0")
        published.publish(EU_BUCKET, "1.1.0")
        published.publish(BAD_BUCKET, "2.0.0")
        s3.put_object(Bucket=BAD_BUCKET, Key=f"models/{NAME}/2.0.0/config.json", Body=b'{"tampered": true}')
        published.publish(BAD_BUCKET, "3.0.0", manifest_version="1.0.0")
        yield published


def test_versions_sort_by_their_numbers_not_as_text():
    versions = ["1.10.0", "1.9.2", "2024-01-10", "1.0.0", "2024-01-9"]
    assert sorted(versions, key=version_order) == ["1.0.0", "1.9.2", "1.10.0", "2024-01-9", "2024-01-10"]


def test_a_version_is_pulled_verified_served_from_the_cache_and_pulled_again_when_damaged(store, tmp_path):
    client = ModelStore(EU_BUCKET, "eu-west-1", tmp_path, topology=DEFAULT_TOPOLOGY, endpoint_url=store.endpoint)
    assert client.versions(NAME) == ["1.0.0", "1.1.0"] and client.latest_version(NAME) == "1.1.0"
    pulled = client.pull(NAME, "1.1.0")
    assert pulled == tmp_path / NAME / "1.1.0"
    assert verify_model_dir(pulled).version == "1.1.0"
    assert [p.name for p in (tmp_path / NAME).iterdir()] == ["1.1.0"], "no staging directory is left behind"
    unreachable = ModelStore(
        EU_BUCKET, "eu-west-1", tmp_path, topology=DEFAULT_TOPOLOGY, endpoint_url=f"http://127.0.0.1:{free_port()}"
    )
    assert unreachable.pull(NAME, "1.1.0") == pulled, "a verified cached version needs no store"
    (pulled / "tokenizer.json").write_text("{}")
    assert client.pull(NAME, "1.1.0") == pulled
    assert verify_model_dir(pulled).version == "1.1.0"


def test_a_tampered_object_is_refused_and_nothing_is_cached(store, tmp_path):
    client = ModelStore(BAD_BUCKET, "eu-west-1", tmp_path, topology=DEFAULT_TOPOLOGY, endpoint_url=store.endpoint)
    with pytest.raises(ModelStoreError, match=r"2\.0\.0/config\.json: sha256 [0-9a-f]{64} does not match [0-9a-f]{64}"):
        client.pull(NAME, "2.0.0")
    assert list((tmp_path / NAME).iterdir()) == [], "neither the version nor a staging directory may remain"


def test_a_manifest_published_under_the_wrong_version_is_refused(store, tmp_path):
    client = ModelStore(BAD_BUCKET, "eu-west-1", tmp_path, topology=DEFAULT_TOPOLOGY, endpoint_url=store.endpoint)
    with pytest.raises(ModelStoreError, match=f"3.0.0/manifest.json describes '{NAME}' version '1.0.0'"):
        client.pull(NAME, "3.0.0")


def test_a_missing_version_names_what_was_asked_for(store, tmp_path):
    client = ModelStore(EU_BUCKET, "eu-west-1", tmp_path, topology=DEFAULT_TOPOLOGY, endpoint_url=store.endpoint)
    with pytest.raises(ModelStoreError, match=f"cannot download s3://{EU_BUCKET}/models/{NAME}/9.9.9/manifest.json"):
        client.pull(NAME, "9.9.9")


@pytest.mark.parametrize(
    ("serving_region", "bucket", "refusal"),
    [
        ("eu-west-1", EU_BUCKET, None),
        ("us-west-2", US_BUCKET, None),
        ("eu-west-1", US_BUCKET, "is in us-west-2 (jurisdiction us), outside this replica's jurisdiction eu"),
        ("us-west-2", EU_BUCKET, "is in eu-west-1 (jurisdiction eu), outside this replica's jurisdiction us"),
        ("us-west-2", JP_BUCKET, "is in ap-northeast-1 (jurisdiction jp), outside this replica's jurisdiction us"),
        ("eu-west-1", VIRGINIA_BUCKET, "is in us-east-1, which is no region of the topology"),
    ],
)  # fmt: skip
def test_a_bucket_outside_the_serving_jurisdiction_is_refused(store, tmp_path, serving_region, bucket, refusal):
    client = ModelStore(bucket, serving_region, tmp_path, topology=DEFAULT_TOPOLOGY, endpoint_url=store.endpoint)
    if refusal is None:
        assert client.check_jurisdiction().aws_region == serving_region
    else:
        with pytest.raises(ModelStoreError, match=refusal.replace("(", r"\(").replace(")", r"\)")) as error:
            client.check_jurisdiction()
        assert "SPEECH_MODEL__BUCKET" in str(error.value)


def test_python_m_serving_refuses_a_cross_jurisdiction_bucket_at_start_up(store, tmp_path):
    env = {
        **os.environ,
        **MOTO_ENV,
        "SPEECH_REGION": "eu-west-1",
        "SPEECH_MODEL__BUCKET": US_BUCKET,
        "SPEECH_MODEL__ENDPOINT_URL": store.endpoint,
        "SPEECH_MODEL__CACHE_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--port", str(free_port())],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr[-2000:]  # uvicorn's start-up failure
    assert f"model bucket '{US_BUCKET}' is in us-west-2 (jurisdiction us), outside this replica's" in result.stderr
    assert not any(tmp_path.iterdir()), "nothing was pulled from the refused bucket"


def store_settings(store: Store, bucket: str, cache: Path, **model: Any) -> Settings:
    """A replica of the EU store, its model run as every test server's (``server_model``): these tests are about which
    version serves, not how well it transcribes."""
    return Settings(
        region="eu-west-1",
        model=server_model(cache, name=NAME, bucket=bucket, endpoint_url=store.endpoint, **model),
        auth={"admin_key_hashes": [digest(ADMIN_KEY)]},
        grpc={"port": 0},
        tts={"enabled": False},
    )


ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture(scope="module")
def eu_cache(tmp_path_factory) -> Path:
    """One cache for the servers on EU_BUCKET: each verified version is pulled once per module, not per server."""
    return tmp_path_factory.mktemp("eu-cache")


@pytest.mark.slow
def test_a_hot_swap_leaves_live_streams_on_their_version_and_sends_new_work_to_the_new_one(
    store, eu_cache, synthesize, word_error_rate
):
    speech, other = synthesize(SPEECH, engine="flite"), synthesize(OTHER_SPEECH, engine="flite")
    settings = store_settings(store, EU_BUCKET, eu_cache, version="1.0.0")
    with live_server(settings) as server, server.client() as http:
        assert http.get("/readyz").json()["model_version"] == "1.0.0"
        assert http.get("/v1/models").json()["store"]["versions"] == ["1.0.0", "1.1.0"]

        async def swap_under_a_live_stream():
            loop = asyncio.get_running_loop()
            one_second_in, swapped = loop.create_future(), loop.create_future()
            first, second = with_silence(speech), with_silence(other)
            stream = asyncio.create_task(
                # Faster than real time (within the server's pace): the swap needs a live stream, not a slow one.
                stream_audio(server.ws_url, first, realtime=2.5, one_second_in=one_second_in, then=(swapped, second))
            )
            await one_second_in
            reload = await asyncio.to_thread(http.post, "/v1/models/reload", headers=ADMIN)
            during = await asyncio.to_thread(http.get, "/v1/models")
            batch = await asyncio.to_thread(http.post, "/v1/asr", content=wav_bytes(speech))
            swapped.set_result(None)
            assert not stream.done(), "the swap must happen while the stream is live"
            return reload, during, batch, await stream

        reload, during, batch, outcome = asyncio.run(swap_under_a_live_stream())
        assert reload.status_code == 200, reload.text
        assert reload.json()["changed"] and reload.json()["previous"]["version"] == "1.0.0"
        assert reload.json()["current"] == {
            "name": NAME,
            "version": "1.1.0",
            "source": f"s3://{EU_BUCKET}/models/{NAME}/1.1.0/",
        }
        loaded = {m["version"]: m["holders"] for m in during.json()["loaded"]}
        assert loaded == {"1.0.0": 1, "1.1.0": 0}, "the old version stays loaded for the stream that holds it"
        assert batch.json()["model_version"] == "1.1.0"
        assert outcome.close_code == 1000 and outcome.ready["model_version"] == "1.0.0"
        finals = outcome.of_type("final")
        assert len(finals) == 2, "one utterance before the swap, one after it"
        assert {m["model_version"] for m in outcome.messages} == {"1.0.0"}, "the stream kept the engine it started on"
        assert word_error_rate([SPEECH, OTHER_SPEECH], [f["text"] for f in finals]) <= 0.15, finals

        assert [m["version"] for m in http.get("/v1/models").json()["loaded"]] == ["1.1.0"], "1.0.0 closed on release"
        assert http.post("/v1/models/reload", headers=ADMIN).json()["changed"] is False
        assert http.get("/readyz").json()["model_version"] == "1.1.0"
        samples = scrape(server.base_url)
        labels = {"region": "eu-west", "kind": "asr", "name": NAME}
        assert sample(samples, "speech_model_swaps_total", **labels, model_version="1.1.0", outcome="swapped") == 1
        assert sample(samples, "speech_model_info", **labels, model_version="1.1.0") == 1
        assert ("speech_model_info", frozenset({**labels, "model_version": "1.0.0"}.items())) not in samples


@pytest.mark.slow
def test_polling_swaps_to_a_newly_published_version(store, tmp_path):
    store.publish(POLL_BUCKET, "1.0.0")
    settings = store_settings(store, POLL_BUCKET, tmp_path, poll_interval_s=0.5)
    with live_server(settings) as server, server.client() as http:
        assert http.get("/readyz").json()["model_version"] == "1.0.0"
        store.publish(POLL_BUCKET, "1.0.1")
        deadline = time.monotonic() + 120
        while http.get("/readyz").json()["model_version"] != "1.0.1":
            assert time.monotonic() < deadline, "the new version was not picked up within 120 s"
            time.sleep(0.5)


def test_a_tampered_store_model_fails_health_instead_of_serving(store, tmp_path):
    settings = store_settings(store, BAD_BUCKET, tmp_path, version="2.0.0")
    with live_server(settings, wait_ready=False) as server, server.client() as http:
        deadline = time.monotonic() + 60
        while (health := http.get("/healthz")).status_code == 200:
            assert time.monotonic() < deadline, "the failed load was never reported"
            time.sleep(0.2)
        assert health.status_code == 503
        assert health.json()["detail"] == f"version 2.0.0 of {NAME} failed verification; the server log says why"
        assert http.get("/readyz").status_code == 503


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def files_of(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Each file's inode, size and modification time: a deleted, replaced or rewritten file changes its entry, and
    comparing them costs a stat instead of hashing the model again."""
    return {p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def pinned_server(store, eu_cache):
    """Serving 1.0.0 from the EU store, with an admin key: the target of the reload attacks below."""
    with live_server(store_settings(store, EU_BUCKET, eu_cache, version="1.0.0")) as server:
        yield server, eu_cache


def test_reload_refuses_versions_that_are_not_plain_names_and_the_cache_survives(pinned_server, synthesize):
    """The attack: ``{"version": "."}`` deleted the live model's cached files, ``".."`` the whole bucket cache."""
    server, cache = pinned_server
    live = cache / "s3" / EU_BUCKET / NAME / "1.0.0"
    untouched = files_of(live)
    with server.client(headers=ADMIN) as http:
        for version in (".", "..", "...", "a/b", "../1.0.0", ".hidden", "x" * 65, ""):
            response = http.post("/v1/models/reload", json={"version": version})
            assert response.status_code == 422, response.text
            assert "model version" in response.text and "starting with a letter or digit" in response.text
            assert files_of(live) == untouched, f"{version!r} touched the live version's files"
        assert verify_model_dir(live).version == "1.0.0"
        assert http.get("/readyz").json()["model_version"] == "1.0.0"
        transcribed = http.post("/v1/asr", content=wav_bytes(synthesize(SPEECH, engine="flite")))
    assert transcribed.status_code == 200 and "stella" in transcribed.json()["text"].lower()


def test_a_failed_reload_says_what_failed_without_paths_or_keys_and_adds_no_metric_series(pinned_server):
    server, _ = pinned_server
    asked = ["9.9.9", "v" + "9" * 63]
    with server.client(headers=ADMIN) as http:
        for version in asked:
            response = http.post("/v1/models/reload", json={"version": version})
            assert response.status_code == 502
            assert response.json()["detail"] == (
                f"reload of version {version} failed: that version is not in the model store; "
                "still serving version 1.0.0"
            )
    exposition = httpx.get(server.base_url + "/metrics").text
    assert not any(version in exposition for version in asked), "a version that never loaded became a label"
    samples = scrape(server.base_url)
    labels = {"region": "eu-west", "model_version": "1.0.0", "kind": "asr", "name": NAME}
    assert sample(samples, "speech_model_swaps_total", **labels, outcome="failed") >= 2


def test_the_store_client_refuses_names_that_would_leave_its_cache(store, tmp_path):
    client = ModelStore(
        EU_BUCKET, "eu-west-1", tmp_path / "cache", topology=DEFAULT_TOPOLOGY, endpoint_url=store.endpoint
    )
    victim = client.pull(NAME, "1.0.0")
    for name, version in ((NAME, "."), (NAME, ".."), ("..", "1.0.0"), (NAME, "../1.0.0"), (NAME, "a/b")):
        with pytest.raises(ModelStoreError, match="is not accepted; use 1-64 letters"):
            client.pull(name, version)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "cache" / NAME / "2.0.0").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelStoreError, match="is not a version directory inside"):
        client.pull(NAME, "2.0.0")
    assert outside.is_dir() and verify_model_dir(victim).version == "1.0.0"


def test_versions_in_the_store_that_are_not_plain_names_are_ignored(store):
    odd = ("..", ".hidden", "-dash")
    for version in (*odd, "1.2.0"):
        store.s3.put_object(Bucket=ODD_BUCKET, Key=f"models/{NAME}/{version}/{MANIFEST_FILE}", Body=b"{}")
    listed = store.s3.list_objects_v2(Bucket=ODD_BUCKET, Prefix=f"models/{NAME}/", Delimiter="/")
    assert {p["Prefix"] for p in listed["CommonPrefixes"]} >= {f"models/{NAME}/{v}/" for v in odd}, "S3 keeps them"
    client = ModelStore(
        ODD_BUCKET, "eu-west-1", Path("/nonexistent"), topology=DEFAULT_TOPOLOGY, endpoint_url=store.endpoint
    )
    assert client.versions(NAME) == ["1.2.0"]
