"""What a call can fail with. Every error names the region(s) involved and what to do next."""

from __future__ import annotations

from collections.abc import Mapping


class SpeechClientError(Exception):
    """Base of every error the client raises."""


class ConfigurationError(SpeechClientError, ValueError):
    """The client was set up inconsistently: an unknown region or area, a missing endpoint, a bad policy value."""


class ResidencyError(SpeechClientError):
    """A request would leave, or did leave, the caller's data jurisdiction; nothing is returned from such a server."""


class ApiError(SpeechClientError):
    """The server refused the request for a reason retrying elsewhere cannot fix (4xx other than 429)."""

    def __init__(self, region: str, status: int, detail: str) -> None:
        super().__init__(f"{region} answered {status}: {detail}")
        self.region = region
        self.status = status
        self.detail = detail


class AuthenticationError(ApiError):
    """The API key is missing or wrong (401), or a stream was closed 1008 for it."""


class MisdirectedError(ApiError, ResidencyError):
    """The server refused the tenant because its data must stay in another jurisdiction (421)."""

    def __init__(self, region: str, status: int, detail: str, endpoints: tuple[str, ...]) -> None:
        super().__init__(region, status, detail)
        self.endpoints = endpoints


class NoRegionAvailable(SpeechClientError):
    """Every region of the caller's chain failed or has its circuit open; ``reasons`` says why, region by region."""

    def __init__(self, chain: tuple[str, ...], reasons: Mapping[str, str]) -> None:
        described = "; ".join(f"{region}: {reasons.get(region, 'not tried')}" for region in chain)
        super().__init__(f"no region of the chain {' -> '.join(chain)} could serve the request ({described})")
        self.chain = chain
        self.reasons = dict(reasons)


class StreamClosedError(SpeechClientError):
    """A stream ended other than by a normal close after ``stop``; the messages received before it stay valid."""

    def __init__(self, region: str, code: int, reason: str, detail: str | None = None) -> None:
        super().__init__(f"the stream on {region} closed with {code} {reason!r}" + (f": {detail}" if detail else ""))
        self.region = region
        self.code = code
        self.reason = reason
        self.detail = detail
