"""A real ``redis-server`` for the speaker store tests: a unix socket in a temporary directory, no TCP port to
collide on, nothing saved to disk."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.serving.server_fixtures import wait_until


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A fresh Redis for the block; yields its ``unix://`` URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed; the speaker store tests need it: apt-get install -y redis-server")
    with tempfile.TemporaryDirectory(prefix="redis-") as tmp:
        socket = Path(tmp) / "redis.sock"
        process = subprocess.Popen(
            [executable, "--port", "0", "--unixsocket", str(socket), "--dir", tmp, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        url = f"unix://{socket}"
        try:
            wait_until(lambda: _answers(url) or process.poll() is not None, 30, "redis-server to start")
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode} during start-up")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False
