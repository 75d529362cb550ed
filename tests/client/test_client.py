"""The client against real servers on loopback: three regions, one of which is really stopped and restarted.

Nothing of the server is mocked; a breaker's clock is the only thing the tests drive by hand, so that "the reset
timeout has passed" needs no sleeping. ``synthesize`` is tested here too (playable audio, the server's cache verdict,
its refusals), in the same file so that one test process starts the three servers once for both.
"""

from __future__ import annotations

import asyncio
import io

import pytest
import soundfile as sf

from contract.topology import DEFAULT_TOPOLOGY
from speech_client import (
    ApiError,
    AsyncSpeechClient,
    AuthenticationError,
    BreakerPolicy,
    BreakerState,
    Caller,
    NoRegionAvailable,
    ResidencyError,
    RetryPolicy,
    Speech,
    SpeechClient,
    StreamClosedError,
)
from tests.client.conftest import ANY_KEY, EU_KEY, Restartable, errors_of_kind, residency_refusals
from tests.client.test_routing import ManualClock

QUICK = RetryPolicy(attempts_per_region=2, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=0)


def frames(pcm: bytes, size: int = 3200) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def test_a_clip_is_transcribed_by_the_callers_primary_region(regions, speech_wav):
    with SpeechClient(regions.endpoints, caller=Caller(continent="NA"), api_key=ANY_KEY) as client:
        first = client.transcribe(speech_wav)
        again = client.transcribe(speech_wav, language="en")
    assert client.chain == ("us-west", "ap-northeast", "eu-west")
    assert first.region == again.region == "us-west"
    assert "round bowls" in first.text.lower() and first.segments and first.audio_seconds > 1


def test_an_async_stream_yields_partials_and_finals_from_the_callers_region(regions, speech_pcm):
    async def run() -> tuple[str, list]:
        client = AsyncSpeechClient(regions.endpoints, caller=Caller(continent="AS"), api_key=ANY_KEY)
        async with client, client.stream() as stream:
            for frame in frames(speech_pcm):
                await stream.send(frame)
            await stream.finish()
            return stream.region, [m async for m in stream]

    region, messages = asyncio.run(run())
    assert region == "ap-northeast"
    finals = [m for m in messages if m.is_final]
    assert finals and "round bowls" in " ".join(m.text for m in finals).lower()


def test_a_blocking_stream_yields_the_same_messages(regions, speech_pcm):
    with SpeechClient(regions.endpoints, caller=Caller(continent="EU"), api_key=EU_KEY) as client:
        messages = list(client.transcribe_stream(frames(speech_pcm)))
    assert "round bowls" in " ".join(m.text for m in messages if m.is_final).lower()


def test_a_stream_without_interim_results_yields_only_finals(regions, speech_pcm):
    with SpeechClient(regions.endpoints, caller=Caller(continent="EU"), api_key=EU_KEY) as client:
        messages = list(client.transcribe_stream(frames(speech_pcm), interim_results=False))
    assert messages and all(m.is_final for m in messages), messages
    assert "round bowls" in " ".join(m.text for m in messages).lower()


def test_a_wrong_key_is_an_authentication_error_on_batch_and_stream_and_fails_nothing_over(regions, speech_wav):
    with SpeechClient(regions.endpoints, caller=Caller(continent="AF"), api_key="not-a-key") as client:
        with pytest.raises(AuthenticationError) as batch:
            client.transcribe(speech_wav)
        with pytest.raises(AuthenticationError):
            list(client.transcribe_stream([b"\0" * 640]))
        assert batch.value.region == "eu-west" and batch.value.status == 401
        assert client.breaker_state("eu-west") is BreakerState.CLOSED


def test_bad_audio_is_the_callers_error_not_a_reason_to_fail_over(regions):
    client = SpeechClient(regions.endpoints, caller=Caller(continent="NA"), api_key=ANY_KEY)
    with client, pytest.raises(ApiError) as refused:
        client.transcribe(b"this is not audio")
    assert refused.value.region == "us-west" and 400 <= refused.value.status < 500, refused.value


def test_an_endpoint_map_that_sends_eu_data_to_another_region_is_caught_by_the_servers_own_name(regions, speech_wav):
    wrong = {**regions.endpoints, "eu-west": regions.us_west.base_url}
    client = SpeechClient(wrong, caller=Caller(continent="EU"), api_key=ANY_KEY)
    with client, pytest.raises(ResidencyError, match="served by 'us-west'"):
        client.transcribe(speech_wav)


@pytest.mark.slow
def test_with_eu_west_stopped_callers_fail_over_or_fail_inside_the_eu_and_the_breaker_skips_it_until_a_probe_finds_it(
    regions, eu_west_stopped, speech_wav, speech_pcm
):
    """One outage for both stories: bringing a region back costs a model load and a warm-up, more than all their
    requests together, and the breaker's story ends with eu-west back, so nothing is started again after it."""
    _unrestricted_callers_fail_over_and_eu_callers_fail_cleanly_inside_the_eu(regions, speech_wav, speech_pcm)
    _the_breaker_opens_skips_the_region_even_once_it_is_back_then_half_opens_and_closes(
        regions, eu_west_stopped, speech_wav
    )


def _unrestricted_callers_fail_over_and_eu_callers_fail_cleanly_inside_the_eu(regions, speech_wav, speech_pcm) -> None:
    refusals = {
        name: residency_refusals(server) for name, server in (("us", regions.us_west), ("ap", regions.ap_northeast))
    }
    with SpeechClient(regions.endpoints, caller=Caller(continent="AF"), api_key=ANY_KEY, retry=QUICK) as africa:
        assert africa.transcribe(speech_wav).region == "us-west"
        assert "round bowls" in " ".join(m.text for m in africa.transcribe_stream(frames(speech_pcm))).lower()
    for caller in (Caller(continent="EU"), Caller(continent="NA", jurisdiction="eu")):
        with SpeechClient(regions.endpoints, caller=caller, api_key=EU_KEY, retry=QUICK) as europe:
            with pytest.raises(NoRegionAvailable) as failed:
                europe.transcribe(speech_wav)
            with pytest.raises(NoRegionAvailable):
                list(europe.transcribe_stream([b"\0" * 640]))
        assert failed.value.chain == ("eu-west",) and "ConnectError" in failed.value.reasons["eu-west"]
    assert residency_refusals(regions.us_west) == refusals["us"], "an EU request reached us-west"
    assert residency_refusals(regions.ap_northeast) == refusals["ap"], "an EU request reached ap-northeast"


def _the_breaker_opens_skips_the_region_even_once_it_is_back_then_half_opens_and_closes(
    regions, eu_west: Restartable, speech_wav
) -> None:
    """eu-west is stopped on entry and back on exit: its probe fails while it is down, and succeeds once it is up."""
    clock = ManualClock()
    policy = BreakerPolicy(failure_threshold=2, reset_timeout_s=30)
    with SpeechClient(
        regions.endpoints, caller=Caller(continent="AF"), api_key=ANY_KEY, retry=QUICK, breaker=policy, clock=clock
    ) as client:
        assert client.transcribe(speech_wav).region == "us-west"
        assert client.breaker_state("eu-west") is BreakerState.CLOSED, "one failure is below the threshold"
        assert client.transcribe(speech_wav).region == "us-west"
        assert client.breaker_state("eu-west") is BreakerState.OPEN
        clock.now = 30
        assert client.breaker_state("eu-west") is BreakerState.HALF_OPEN
        assert client.transcribe(speech_wav).region == "us-west"
        assert client.breaker_state("eu-west") is BreakerState.OPEN, "a failed probe opens it again"
        eu_west.start()
        assert client.transcribe(speech_wav).region == "us-west", "an open breaker skips the region"
        clock.now = 60
        assert client.breaker_state("eu-west") is BreakerState.HALF_OPEN
        assert client.transcribe(speech_wav).region == "eu-west", "the probe reaches the region that is back"
        assert client.breaker_state("eu-west") is BreakerState.CLOSED


@pytest.fixture
def eu_west_draining(regions):
    """eu-west refuses new work as a server shutting down does: 503 with Retry-After, streams closed 1013."""
    live = regions.eu_west.start()
    state = live.app.state.serving
    state.is_draining = True
    try:
        yield live
    finally:
        state.is_draining = False


def test_a_busy_region_is_retried_with_backoff_then_left_for_the_next_one(regions, eu_west_draining, speech_wav):
    patient = RetryPolicy(attempts_per_region=3, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=1)
    before = errors_of_kind(eu_west_draining, "shutting_down")
    with SpeechClient(regions.endpoints, caller=Caller(continent="AF"), api_key=ANY_KEY, retry=patient) as client:
        assert client.transcribe(speech_wav).region == "us-west"
    assert errors_of_kind(eu_west_draining, "shutting_down") - before == 3, "three attempts, Retry-After honoured"
    impatient = RetryPolicy(attempts_per_region=3, max_retry_after_s=0.5)
    before = errors_of_kind(eu_west_draining, "shutting_down")
    with SpeechClient(regions.endpoints, caller=Caller(continent="AF"), api_key=ANY_KEY, retry=impatient) as client:
        assert client.transcribe(speech_wav).region == "us-west"
    assert errors_of_kind(eu_west_draining, "shutting_down") - before == 1, "Retry-After: 1 exceeds the patience"


def test_a_stream_closed_1013_is_retried_then_opened_on_the_next_region(regions, eu_west_draining, speech_pcm):
    before = errors_of_kind(eu_west_draining, "shutting_down")

    async def run() -> str:
        async with (
            AsyncSpeechClient(regions.endpoints, caller=Caller(continent="AF"), api_key=ANY_KEY, retry=QUICK) as c,
            c.stream() as stream,
        ):
            await stream.finish()
            assert [m async for m in stream] == []
            return stream.region

    assert asyncio.run(run()) == "us-west"
    assert errors_of_kind(eu_west_draining, "shutting_down") - before == 2


def test_an_eu_stream_refused_by_every_eu_region_reports_each_reason(regions, eu_west_draining):
    async def run() -> None:
        async with (
            AsyncSpeechClient(regions.endpoints, caller=Caller(continent="EU"), api_key=EU_KEY, retry=QUICK) as c,
            c.stream(),
        ):
            pass

    with pytest.raises(NoRegionAvailable, match="eu-west: closed 1013"):
        asyncio.run(run())


def test_a_stream_that_ends_abnormally_raises_after_its_messages(regions):
    async def run() -> None:
        client = AsyncSpeechClient(regions.endpoints, caller=Caller(continent="NA"), api_key=ANY_KEY)
        async with client, client.stream() as stream:
            await stream.send(b"\0" * 64_000)  # over the frame limit
            async for _ in stream:
                pass

    with pytest.raises(StreamClosedError) as closed:
        asyncio.run(run())
    assert closed.value.code == 1009 and closed.value.region == "us-west"


def test_the_client_uses_the_topology_value_it_is_given():
    assert SpeechClient(domain="speech.example.com", topology=DEFAULT_TOPOLOGY).chain == (
        "us-west",
        "ap-northeast",
        "eu-west",
    )


# Synthesis. Each test speaks a text no other test speaks, so its first request is a cache miss whatever ran before.


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
