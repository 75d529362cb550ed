"""Admission and fairness for WebSocket streams: the session limit, per-stream pacing, and stopping live streams.

A stream costs a share of the inference threads whether or not anyone speaks, so admission is capped
(``SPEECH_STREAM__MAX_SESSIONS``). Within a stream, :class:`AudioPacer` caps how fast audio is taken: a client
that sends a file as fast as its link allows is read at a few times real time, and the rest waits in its own TCP
buffers rather than in this server's memory and CPU. :class:`StreamRegistry` knows every live stream, so a
graceful shutdown can end each one's input and let its open utterance be finalised before the socket closes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from serving.streaming import StreamError, StreamSession


class AudioPacer:
    """A token bucket over seconds of audio: ``factor`` seconds of audio per wall-clock second, ``burst_s`` ahead.

    The reader asks :meth:`delay` before reading the next frame and sleeps that long; while it sleeps nothing is
    read, so the client's sends block on TCP flow control. ``clock`` is injectable so the pace can be checked
    without waiting for it.
    """

    def __init__(self, factor: float, burst_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._factor = factor
        self._burst_s = burst_s
        self._clock = clock
        self._credit_s = burst_s
        self._at = clock()

    def delay(self) -> float:
        """Seconds to wait before the next frame may be read (0 when the stream is within its pace)."""
        self._refill()
        return 0.0 if self._credit_s > 0 else -self._credit_s / self._factor

    def consume(self, audio_s: float) -> None:
        """Account for a frame that was read; its audio may take the credit below zero (one frame of overdraft)."""
        self._refill()
        self._credit_s -= audio_s

    def _refill(self) -> None:
        now = self._clock()
        self._credit_s = min(self._burst_s, self._credit_s + (now - self._at) * self._factor)
        self._at = now


class LiveStream:
    """One admitted stream, as the registry sees it: how to stop it, and why it was stopped."""

    def __init__(self) -> None:
        self.ending: StreamError | None = None  # set when the server ends the stream (shutdown)
        self._session: StreamSession | None = None
        self._reader: asyncio.Task | None = None

    def attach(self, session: StreamSession, reader: asyncio.Task) -> None:
        self._session, self._reader = session, reader
        if self.ending is not None:
            self._end_input()

    def stop(self, ending: StreamError) -> None:
        """Stop reading the client and end the session's input: it finalises its open utterance, then ends.

        A stream whose client already said stop keeps its normal ending: it is finishing anyway.
        """
        has_client_stopped = self._reader is not None and self._reader.done()
        if self.ending is None and not has_client_stopped:
            self.ending = ending
        self._end_input()

    def _end_input(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._session is not None:
            self._session.end_input()


class StreamRegistry:
    """Caps concurrent streams and keeps a handle on each live one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._live: set[LiveStream] = set()

    @property
    def active(self) -> int:
        return len(self._live)

    def try_open(self) -> LiveStream | None:
        if len(self._live) >= self.limit:
            return None
        stream = LiveStream()
        self._live.add(stream)
        return stream

    def close(self, stream: LiveStream) -> None:
        self._live.discard(stream)

    def stop_all(self, ending: StreamError) -> None:
        for stream in list(self._live):
            stream.stop(ending)
