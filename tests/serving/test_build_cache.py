"""Builds into the local model cache: processes sharing it build one target once (serving/build/cache.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from serving.build.cache import ensure_built
from serving.model_dir import VOICE_FILES, verify_model_dir, write_manifest


def _voice_into(model_dir: Path) -> None:
    model_dir.mkdir()
    for name in VOICE_FILES:
        (model_dir / name).write_bytes(name.encode())
    write_manifest(model_dir, "piper-test", "1.0.0", "test", kind="tts")


def _blocked_on_lock(lock: Path) -> bool:
    """Whether some thread waits for ``lock``'s flock: the kernel lists a blocked request as ``N: -> FLOCK ...``
    with the file's ``major:minor:inode``."""
    inode = f":{lock.stat().st_ino} "
    return any("-> FLOCK" in line and inode in line for line in Path("/proc/locks").read_text().splitlines())


def test_a_target_another_process_is_building_is_waited_for_and_reused_not_built_again(tmp_path):
    target = tmp_path / "piper-test" / "1.0.0"
    building, release = threading.Event(), threading.Event()
    built_by: list[str] = []

    def slow_build(into: Path) -> None:
        built_by.append("first")
        building.set()
        assert release.wait(timeout=60)
        _voice_into(into)

    def second_build(into: Path) -> None:
        built_by.append("second")
        _voice_into(into)

    results: dict[str, Path] = {}
    first = threading.Thread(target=lambda: results.update(first=ensure_built(target, slow_build)))
    first.start()
    assert building.wait(timeout=60)
    second = threading.Thread(target=lambda: results.update(second=ensure_built(target, second_build)))
    second.start()
    lock = target.parent / f".{target.name}.lock"
    try:
        for _ in range(6000):  # until the second waits for the lock, or (without one) builds beside the first
            if built_by[1:] or (lock.exists() and _blocked_on_lock(lock)):
                break
            second.join(timeout=0.01)
    finally:
        release.set()
    first.join(timeout=60)
    second.join(timeout=60)
    assert built_by == ["first"]
    assert results == {"first": target, "second": target}
    assert verify_model_dir(target).name == "piper-test"


def test_a_damaged_target_is_rebuilt_under_the_lock(tmp_path):
    target = tmp_path / "piper-test" / "1.0.0"
    ensure_built(target, _voice_into)
    (target / VOICE_FILES[0]).write_bytes(b"damaged")
    rebuilt: list[Path] = []

    def rebuild(into: Path) -> None:
        rebuilt.append(into)
        _voice_into(into)

    assert ensure_built(target, rebuild) == target
    assert len(rebuilt) == 1 and verify_model_dir(target).kind == "tts"
