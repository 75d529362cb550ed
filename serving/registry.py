"""Reference-counted engine lifetime, so a model version can be swapped under live traffic.

A request or stream *acquires* the current engine and holds it until it is done; a swap only changes which engine
the next acquire gets. The registry's own reference to the current engine is dropped on swap, and an engine is
closed when its last holder releases it: a stream that started on version 1 finishes on version 1 even after
version 2 took over, and version 1's memory is freed the moment that stream ends.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

from serving.engine import Engine

log = logging.getLogger(__name__)


class RegistryClosedError(RuntimeError):
    """The server is shutting down and hands out no more engines."""


E = TypeVar("E", bound=Engine)


@dataclass(frozen=True)
class ModelInfo:
    """What is being served, of which kind (asr, tts, speaker), and where it came from (``bundled`` or ``s3://``)."""

    name: str
    version: str
    source: str
    kind: str = "asr"


class _Entry(Generic[E]):
    def __init__(self, engine: E, info: ModelInfo) -> None:
        self.engine = engine
        self.info = info
        self.references = 1  # the registry's own, while this entry is current


class EngineLease(Generic[E]):
    """One holder's reference to an engine; release it exactly once (or use it as a context manager)."""

    def __init__(self, registry: EngineRegistry[E], entry: _Entry[E]) -> None:
        self._registry = registry
        self._entry: _Entry[E] | None = entry
        self.engine = entry.engine
        self.info = entry.info

    def release(self) -> None:
        entry, self._entry = self._entry, None
        if entry is not None:
            self._registry._unreference(entry)

    def __enter__(self) -> EngineLease[E]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class EngineRegistry(Generic[E]):
    """Hands out the current engine of one configured model and closes each engine once nobody holds it.
    Thread-safe. Generic over the engine's kind: one registry per served model (ASR, each voice, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: _Entry[E] | None = None
        self._open: list[_Entry[E]] = []  # the current engine and older ones still held by someone
        self._is_closed = False

    @property
    def current(self) -> ModelInfo | None:
        with self._lock:
            return self._current.info if self._current else None

    def loaded(self) -> list[tuple[ModelInfo, int]]:
        """Every engine still open, with how many requests or streams hold it (older ones are draining)."""
        with self._lock:
            return [(e.info, e.references - (e is self._current)) for e in self._open]

    def acquire(self) -> EngineLease[E]:
        with self._lock:
            if self._is_closed or self._current is None:
                raise RegistryClosedError("no model is loaded" if not self._is_closed else "the server is stopping")
            self._current.references += 1
            return EngineLease(self, self._current)

    def swap(self, engine: E, info: ModelInfo) -> ModelInfo | None:
        """Make ``engine`` current; return what it replaced. The old engine closes when its last lease ends."""
        with self._lock:
            if self._is_closed:
                engine.close()
                raise RegistryClosedError("the server is stopping; the new model was not installed")
            previous, self._current = self._current, _Entry(engine, info)
            self._open.append(self._current)
        if previous is not None:
            self._unreference(previous)
            log.info("model %s %s replaced %s (%s)", info.name, info.version, previous.info.version, info.source)
        return previous.info if previous else None

    def close(self) -> None:
        """Stop handing out engines and drop the registry's reference; held engines close on their release."""
        with self._lock:
            self._is_closed, current, self._current = True, self._current, None
        if current is not None:
            self._unreference(current)

    def _unreference(self, entry: _Entry[E]) -> None:
        with self._lock:
            entry.references -= 1
            is_last = entry.references == 0
            if is_last:
                self._open.remove(entry)
        if is_last:
            log.info("closing model %s %s: no request or stream holds it any more", entry.info.name, entry.info.version)
            entry.engine.close()
