"""A voice comes from the regional model store like an ASR model, and a new version of it never serves the old
version's cached audio: against a moto S3 server on loopback holding the real voice and model files."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from serving.settings import Settings
from tests.serving.server_fixtures import (
    ADMIN_KEY,
    LiveServer,
    digest,
    live_server,
    moto_store,
    publish_in_moto,
    sample,
    scrape,
    server_model,
)

BUCKET = "speech-models-eu-west-tts"
ASR, VOICE = "whisper-tiny.en", "piper-en-us-joe-medium"
ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture(scope="module")
def store_server(tiny_en_model_dir, bundled_voice_dir, tmp_path_factory) -> Iterator[LiveServer]:
    with moto_store() as endpoint:
        s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        publish_in_moto(BUCKET, tiny_en_model_dir, ASR, "1.0.0")
        for version in ("1.0.0", "1.0.1"):
            publish_in_moto(BUCKET, bundled_voice_dir, VOICE, version)
        settings = Settings(
            region="eu-west-1",
            # The ASR model is only loaded (the server needs one).
            model=server_model(tmp_path_factory.mktemp("c"), name=ASR, bucket=BUCKET, endpoint_url=endpoint),
            tts={"version": "1.0.0"},
            grpc={"port": 0},
            auth={"admin_key_hashes": [digest(ADMIN_KEY)]},
        )
        with live_server(settings) as server:
            yield server


@pytest.mark.slow
def test_a_voice_swapped_in_from_the_store_never_answers_with_the_old_versions_audio(store_server):
    text = {"text": "A new voice version speaks for itself."}
    with store_server.client() as http:
        (voice,) = [m for m in http.get("/v1/models").json()["models"] if m["kind"] == "tts"]
        assert voice["current"] == {"name": VOICE, "version": "1.0.0", "source": f"s3://{BUCKET}/models/{VOICE}/1.0.0/"}
        assert voice["store"]["versions"] == ["1.0.0", "1.0.1"]
        first, cached = http.post("/v1/tts", json=text), http.post("/v1/tts", json=text)
        assert [(r.headers["x-speech-cache"], r.headers["x-speech-model-version"]) for r in (first, cached)] == [
            ("miss", "1.0.0"),
            ("hit", "1.0.0"),
        ]

        reload = http.post("/v1/models/reload", json={"model": VOICE, "version": "1.0.1"}, headers=ADMIN)
        assert reload.status_code == 200, reload.text
        assert reload.json()["previous"]["version"] == "1.0.0" and reload.json()["current"]["version"] == "1.0.1"
        after, again = http.post("/v1/tts", json=text), http.post("/v1/tts", json=text)
        assert [(r.headers["x-speech-cache"], r.headers["x-speech-model-version"]) for r in (after, again)] == [
            ("miss", "1.0.1"),
            ("hit", "1.0.1"),
        ], "the new version synthesized afresh instead of answering with 1.0.0's audio"
        assert http.get("/readyz").json()["model_version"] == "1.0.0", "the ASR model was not touched"
        unknown = http.post("/v1/models/reload", json={"model": "nobody"}, headers=ADMIN)
        assert unknown.status_code == 404 and VOICE in unknown.json()["detail"]
    samples = scrape(store_server.base_url)
    labels = {"region": "eu-west", "kind": "tts", "name": VOICE}
    assert sample(samples, "speech_model_info", **labels, model_version="1.0.1") == 1
    assert ("speech_model_info", frozenset({**labels, "model_version": "1.0.0"}.items())) not in samples
    assert sample(samples, "speech_model_swaps_total", **labels, model_version="1.0.1", outcome="swapped") == 1
