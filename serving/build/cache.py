"""Putting a built model directory into the local cache so that no reader ever sees half of one.

A build runs in a hidden staging directory beside its target and appears by one rename; a sound directory already
there is reused, a damaged one rebuilt. Processes sharing the cache build one target one at a time (a lock file
beside it): the second waits and reuses what the first built, instead of building it again beside it. Shared by
every build (``export`` for Whisper, ``voice`` for voices).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from serving.model_dir import ModelError, verify_model_dir

log = logging.getLogger(__name__)


def ensure_built(target: Path, build: Callable[[Path], object], *, force: bool = False) -> Path:
    """``target`` when it verifies (unless ``force``), else ``build(staging)`` renamed into place. Another process
    building the same target meanwhile is waited for; what it built is reused when it verifies."""
    if not force and _is_sound(target, warn=False):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _building(target):
        if not force and _is_sound(target, warn=True):
            return target
        with tempfile.TemporaryDirectory(prefix=f".{target.name}.building-", dir=target.parent) as staging:
            built = Path(staging) / target.name
            build(built)
            return _publish(built, target)


def _is_sound(target: Path, *, warn: bool) -> bool:
    if not target.exists():
        return False
    try:
        verify_model_dir(target)
    except ModelError as err:
        if warn:
            log.warning("rebuilding %s: %s", target, err)
        return False
    return True


@contextlib.contextmanager
def _building(target: Path) -> Iterator[None]:
    """Hold the build lock of ``target`` (``.<name>.lock`` beside it, never removed: a lock file deleted while
    another process waits on it would let a third build beside both). The kernel frees it if the holder dies."""
    with (target.parent / f".{target.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _publish(built: Path, target: Path) -> Path:
    """Rename ``built`` into place; if another process published first and its copy is sound, keep theirs."""
    if target.exists():
        stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
        target.rename(stale)
        shutil.rmtree(stale)
    try:
        built.rename(target)
    except OSError:
        verify_model_dir(target)
    return target
