"""The gRPC modules come from speech.proto through the set-up's command, and their absence is a clear error."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from serving.grpc_api import generated

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("speech_pb2.py", "speech_pb2.pyi", "speech_pb2_grpc.py")


def test_the_importable_modules_are_what_the_proto_generates_today(tmp_path):
    (tmp_path / "serving" / "grpc_api").mkdir(parents=True)
    shutil.copy(REPO / generated.PROTO, tmp_path / generated.PROTO)
    command = shlex.split(generated.PROTOC_COMMAND.replace("python3", sys.executable, 1))
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, timeout=60)
    for name in GENERATED:
        fresh = (tmp_path / "serving" / "grpc_api" / name).read_text()
        assert fresh == (REPO / "serving" / "grpc_api" / name).read_text(), f"{name} is stale; run scripts/setup.sh"


def test_a_server_without_the_generated_modules_says_which_command_builds_them(tmp_path):
    for package in ("contract", "serving"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("speech_pb2*", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECH_")} | {"PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the gRPC code generated from serving/grpc_api/speech.proto is missing" in result.stderr
    assert generated.PROTOC_COMMAND in result.stderr and "SPEECH_GRPC__ENABLED=false" in result.stderr
