"""The client's chains come from the topology, and a caller bound to the EU gets EU regions only, checked."""

from __future__ import annotations

import dataclasses
import random

import pytest

from contract.topology import DEFAULT_TOPOLOGY, Region
from speech_client import (
    BreakerPolicy,
    BreakerState,
    Caller,
    ConfigurationError,
    ResidencyError,
    RetryPolicy,
    chain_for,
)
from speech_client.breaker import CircuitBreaker
from speech_client.retry import retry_after_s
from speech_client.routing import check_chain, check_served_by, endpoints_for


def keys(caller: Caller, topology=DEFAULT_TOPOLOGY) -> list[str]:
    return [r.key for r in chain_for(topology, caller)]


def test_each_area_gets_the_chain_the_dns_records_are_built_from():
    for continent in ("NA", "AS", "AF", "EU", "OC"):
        assert chain_for(DEFAULT_TOPOLOGY, Caller(continent=continent)) == DEFAULT_TOPOLOGY.continent_chain(continent)
    assert keys(Caller()) == [r.key for r in DEFAULT_TOPOLOGY.default_chain()]
    assert keys(Caller(continent="AF")) == ["eu-west", "us-west", "ap-northeast"]


@pytest.mark.parametrize(
    "caller",
    [
        Caller(continent="EU"),
        Caller(country="CY", continent="AS"),  # an EU country geolocated to Asia
        Caller(continent="NA", jurisdiction="eu"),  # an EU tenant travelling
        Caller(country="DE"),
    ],
)
def test_a_caller_bound_to_the_eu_gets_only_eu_regions(caller):
    assert keys(caller) == ["eu-west"]


def test_with_a_second_eu_region_the_eu_chain_fails_over_inside_the_eu_only():
    eu_central = Region(
        key="eu-central",
        aws_region="eu-central-1",
        jurisdiction="eu",
        timezone="Europe/Berlin",
        continents=(),
        cloudflare_regions=(),
        failover=("us-west", "eu-west"),
    )
    regions = [
        dataclasses.replace(r, failover=("eu-central", *r.failover)) if r.key == "eu-west" else r
        for r in DEFAULT_TOPOLOGY.regions
    ]
    topology = dataclasses.replace(DEFAULT_TOPOLOGY, regions=(*regions, eu_central))
    assert keys(Caller(continent="EU"), topology) == ["eu-west", "eu-central"]
    assert keys(Caller(continent="AF"), topology) == ["eu-west", "eu-central", "us-west", "ap-northeast"]


def test_a_chain_leaving_the_eu_is_refused_before_any_request():
    chain = (DEFAULT_TOPOLOGY.region("eu-west"), DEFAULT_TOPOLOGY.region("us-west"))
    with pytest.raises(ResidencyError, match="us-west"):
        check_chain(DEFAULT_TOPOLOGY, chain, "eu")
    check_chain(DEFAULT_TOPOLOGY, chain, None)


def test_an_answer_from_outside_the_eu_or_from_an_unnamed_server_is_refused_for_eu_data():
    eu_west = DEFAULT_TOPOLOGY.region("eu-west")
    check_served_by(DEFAULT_TOPOLOGY, "eu", eu_west, "eu-west")
    for answered in ("us-west", None, "local"):
        with pytest.raises(ResidencyError):
            check_served_by(DEFAULT_TOPOLOGY, "eu", eu_west, answered)
    check_served_by(DEFAULT_TOPOLOGY, None, eu_west, "us-west")


def test_bad_callers_and_endpoint_maps_name_what_is_wrong():
    with pytest.raises(ConfigurationError, match="'XX'"):
        chain_for(DEFAULT_TOPOLOGY, Caller(continent="XX"))
    with pytest.raises(ConfigurationError, match="'mars'"):
        chain_for(DEFAULT_TOPOLOGY, Caller(jurisdiction="mars"))
    chain = DEFAULT_TOPOLOGY.continent_chain("AF")
    with pytest.raises(ConfigurationError, match="no endpoint for us-west, ap-northeast"):
        endpoints_for(DEFAULT_TOPOLOGY, chain, {"eu-west": "http://127.0.0.1:1"}, None)
    with pytest.raises(ConfigurationError, match=r"unknown regions \['moon'\]"):
        endpoints_for(DEFAULT_TOPOLOGY, chain, {"moon": "http://127.0.0.1:1"}, None)
    assert endpoints_for(DEFAULT_TOPOLOGY, chain, None, "speech.example.com")["us-west"] == (
        "https://us-west.speech.example.com"
    )


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_the_threshold_half_opens_after_the_timeout_and_closes_on_success():
    clock = ManualClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2, reset_timeout_s=10, half_open_probes=1), clock)
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now = 10
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow(), "one probe at a time"
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN, "a failed probe opens it again at once"
    clock.now = 20
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_backoff_grows_exponentially_with_jitter_within_bounds_and_honours_retry_after():
    policy = RetryPolicy(attempts_per_region=5, base_delay_s=0.1, max_delay_s=0.5, max_retry_after_s=3)
    rng = random.Random(7)
    delays = [[policy.delay_s(n, None, rng) or 0.0 for _ in range(200)] for n in range(4)]
    for n, samples in enumerate(delays):
        cap = min(0.5, 0.1 * 2**n)
        assert all(0 <= d <= cap for d in samples), n
        assert max(samples) > 0.8 * cap and len(set(samples)) > 100, "full jitter spreads the retries"
    assert policy.delay_s(0, 2.0, rng) == 2.0
    assert policy.delay_s(0, 4.0, rng) is None, "a Retry-After beyond the caller's patience moves on"
    assert retry_after_s("3") == 3.0
    assert retry_after_s("Thu, 01 Jan 2026 00:00:10 GMT", now=1767225600.0) == 10.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (lambda: BreakerPolicy(failure_threshold=0), "failure_threshold=0"),
        (lambda: BreakerPolicy(reset_timeout_s=0), "reset_timeout_s=0"),
        (lambda: RetryPolicy(attempts_per_region=0), "attempts_per_region=0"),
        (lambda: RetryPolicy(base_delay_s=-1), "base_delay_s=-1"),
    ],
)
def test_policies_refuse_values_that_make_no_sense(policy, message):
    with pytest.raises(ConfigurationError, match=message):
        policy()
