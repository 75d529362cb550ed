"""Several models at once: a request's language (given, or detected by the multilingual model) picks the model
specialised for it, here tiny.en for English beside multilingual base, the two bundled builds."""

from __future__ import annotations

from collections.abc import Iterator

import jiwer
import pytest
from whisper_normalizer.basic import BasicTextNormalizer

from serving.settings import ModelSettings
from tests.serving.server_fixtures import LiveServer, live_server, local_settings, sample, scrape, wav_bytes

ENGLISH = "Please call Stella and ask her to bring these things with her from the store."
SPANISH = "Mañana por la mañana vamos a visitar a mis abuelos en el pueblo."
MULTILINGUAL, ENGLISH_ONLY = "whisper-base", "whisper-tiny.en"
_BASIC = BasicTextNormalizer()


@pytest.fixture(scope="module")
def bilingual_server(bundled_model_dir, tiny_en_model_dir) -> Iterator[LiveServer]:
    cache = bundled_model_dir.parents[1]
    assert tiny_en_model_dir.parents[1] == cache
    settings = local_settings(cache, model=ModelSettings(cache_dir=cache, languages={"en": ENGLISH_ONLY}))
    with live_server(settings) as live:
        yield live


def spanish_wer(reference: str, hypothesis: str) -> float:
    """Whisper's basic normaliser (lower case, no punctuation) for a language its English one would mangle."""
    return jiwer.wer(_BASIC(reference), _BASIC(hypothesis))


@pytest.mark.parametrize("language", ["en", None], ids=["given", "detected"])
def test_english_is_transcribed_by_the_english_model(bilingual_server, synthesize, word_error_rate, language):
    params = {"language": language} if language else {}
    with bilingual_server.client() as http:
        answer = http.post("/v1/asr", content=wav_bytes(synthesize(ENGLISH)), params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["language"]) == (ENGLISH_ONLY, "en"), body
    assert word_error_rate([ENGLISH], [body["text"]]) <= 0.2, body["text"]


@pytest.mark.parametrize("language", ["es", None], ids=["given", "detected"])
def test_spanish_is_transcribed_by_the_multilingual_model(bilingual_server, synthesize, language):
    params = {"language": language} if language else {}
    with bilingual_server.client() as http:
        answer = http.post("/v1/asr", content=wav_bytes(synthesize(SPANISH, voice="es")), params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["language"]) == (MULTILINGUAL, "es"), body
    assert spanish_wer(SPANISH, body["text"]) <= 0.2, body["text"]


def test_models_lists_every_served_model_and_metrics_are_labelled_by_model(bilingual_server, synthesize):
    with bilingual_server.client() as http:
        listed = http.get("/v1/models").json()
        ready = http.get("/readyz").json()
        http.post("/v1/asr", content=wav_bytes(synthesize(ENGLISH)), params={"language": "en"})
        http.post("/v1/asr", content=wav_bytes(synthesize(SPANISH, voice="es")), params={"language": "es"})
    assert listed["current"]["name"] == MULTILINGUAL and listed["languages"] == {"en": ENGLISH_ONLY}
    asr = {m["name"]: m for m in listed["models"] if m["kind"] == "asr"}
    assert set(asr) == {MULTILINGUAL, ENGLISH_ONLY} and asr[ENGLISH_ONLY]["current"]["source"] == "bundled"
    assert ready["languages"] == {"en": ENGLISH_ONLY}
    assert {(m["kind"], m["name"]) for m in ready["models"]} >= {("asr", MULTILINGUAL), ("asr", ENGLISH_ONLY)}
    samples = scrape(bilingual_server.base_url)
    version = listed["current"]["version"]
    for model in (MULTILINGUAL, ENGLISH_ONLY):
        labels = {"region": "local", "model_version": version, "model": model, "kind": "batch"}
        assert sample(samples, "speech_inference_duration_seconds_count", **labels) >= 1
        assert sample(samples, "speech_model_info", region="local", model_version=version, kind="asr", name=model) == 1
