"""A Python client for the speech platform: batch and streaming ASR and TTS, across regions, inside the law.

    from speech_client import Caller, SpeechClient

    with SpeechClient(domain="speech.example.com", caller=Caller(continent="EU"), api_key=KEY) as client:
        print(client.transcribe(open("hello.wav", "rb").read()).text)

Each client follows the failover chain the topology (:mod:`contract.topology`) gives the caller's area: the same
chain the DNS records and Cloudflare pools are generated from. Busy regions (503, 429, stream close 1013) are retried
with exponential backoff and jitter, a region that keeps failing has its circuit opened and is skipped until a probe
succeeds, and a caller bound to a strict jurisdiction (the EU) is never sent outside it, nor accepts an answer from
outside it. :class:`AsyncSpeechClient` is the asyncio twin and adds live streaming sessions.
"""

from speech_client.aio import AsyncSpeechClient, AsyncStream
from speech_client.breaker import BreakerPolicy, BreakerState
from speech_client.errors import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    MisdirectedError,
    NoRegionAvailable,
    ResidencyError,
    SpeechClientError,
    StreamClosedError,
)
from speech_client.results import Segment, Speech, StreamMessage, Transcription
from speech_client.retry import RetryPolicy
from speech_client.routing import Caller, chain_for
from speech_client.sync import SpeechClient

__all__ = [
    "ApiError",
    "AsyncSpeechClient",
    "AsyncStream",
    "AuthenticationError",
    "BreakerPolicy",
    "BreakerState",
    "Caller",
    "ConfigurationError",
    "MisdirectedError",
    "NoRegionAvailable",
    "ResidencyError",
    "RetryPolicy",
    "Segment",
    "Speech",
    "SpeechClient",
    "SpeechClientError",
    "StreamClosedError",
    "StreamMessage",
    "Transcription",
    "chain_for",
]
