"""Putting a built model directory into the local cache so that no reader ever sees half of one.

A build runs in a hidden staging directory beside its target and appears by one rename; a sound directory already
there is reused, a damaged one rebuilt. Shared by every build (``export`` for Whisper, ``voice`` for voices).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from serving.model_dir import ModelError, verify_model_dir

log = logging.getLogger(__name__)


def ensure_built(target: Path, build: Callable[[Path], object], *, force: bool = False) -> Path:
    """``target`` when it verifies (unless ``force``), else ``build(staging)`` renamed into place."""
    if target.exists() and not force:
        try:
            verify_model_dir(target)
            return target
        except ModelError as err:
            log.warning("rebuilding %s: %s", target, err)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.building-", dir=target.parent) as staging:
        built = Path(staging) / target.name
        build(built)
        return _publish(built, target)


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
