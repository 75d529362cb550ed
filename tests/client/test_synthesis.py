"""``synthesize`` against the real regional servers: playable audio, the server's cache verdict, and its refusals.

Each test speaks a text no other test speaks, so its first request is a cache miss whatever ran before it.
"""

from __future__ import annotations

import asyncio
import io

import pytest
import soundfile as sf

from speech_client import ApiError, AsyncSpeechClient, BreakerState, Caller, Speech, SpeechClient
from tests.client.conftest import ANY_KEY


def seconds_of(speech: Speech, container: str) -> float:
    """The duration of the answer as a player would decode it; raises if it is not a sound file of that kind."""
    info = sf.info(io.BytesIO(speech.audio))
    assert info.format == container, info
    return info.frames / info.samplerate


def test_synthesize_speaks_playable_wav_and_the_same_request_again_is_a_cache_hit(regions):
    text = "The blocking client asks for speech. Then it asks again."
    with SpeechClient(regions.endpoints, caller=Caller(continent="NA"), api_key=ANY_KEY) as client:
        first = client.synthesize(text)
        again = client.synthesize(text)
    assert first.region == again.region == "us-west"
    assert first.media_type.startswith("audio/wav")
    assert seconds_of(first, "WAV") > 1
    assert not first.is_cache_hit and again.is_cache_hit
    assert again.audio == first.audio, "the cache answers the file the first request streamed"


def test_async_synthesize_speaks_playable_ogg_and_the_same_request_again_is_a_cache_hit(regions):
    text = "The asyncio client wants its speech in Ogg Vorbis."

    async def run() -> tuple[Speech, Speech, Speech]:
        async with AsyncSpeechClient(regions.endpoints, caller=Caller(continent="AS"), api_key=ANY_KEY) as client:
            first = await client.synthesize(text, audio_format="ogg")
            again = await client.synthesize(text, audio_format="ogg")
            faster = await client.synthesize(text, audio_format="ogg", speed=2.0)
            return first, again, faster

    first, again, faster = asyncio.run(run())
    assert first.region == "ap-northeast" and first.media_type.startswith("audio/ogg")
    assert not first.is_cache_hit and again.is_cache_hit
    assert not faster.is_cache_hit, "another speed is another recording"
    assert seconds_of(again, "OGG") > 1
    assert seconds_of(faster, "OGG") < seconds_of(first, "OGG")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"text": ""}, 422, "text is empty; send 1 to"),
        ({"text": "   "}, 422, "text is empty; send 1 to"),
        ({"text": "Hello.", "voice": "nobody"}, 400, "voice 'nobody' is not served here; voices: joe"),
    ],
)
def test_a_bad_synthesis_request_raises_the_servers_message_fails_nothing_over_and_the_server_still_speaks(
    regions, body, status, message
):
    with SpeechClient(regions.endpoints, caller=Caller(continent="NA"), api_key=ANY_KEY) as client:
        with pytest.raises(ApiError) as refused:
            client.synthesize(**body)
        assert refused.value.region == "us-west" and refused.value.status == status
        assert refused.value.detail.startswith(message), refused.value.detail
        assert message in str(refused.value)
        assert client.breaker_state("us-west") is BreakerState.CLOSED
        assert client.synthesize("Still here.").region == "us-west"


def test_async_synthesize_of_empty_text_raises_the_servers_message(regions):
    async def run() -> None:
        async with AsyncSpeechClient(regions.endpoints, caller=Caller(continent="EU"), api_key=ANY_KEY) as client:
            await client.synthesize("")

    with pytest.raises(ApiError, match=r"eu-west answered 422: text is empty; send 1 to \d+ characters"):
        asyncio.run(run())
