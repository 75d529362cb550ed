"""The modules ``grpc_tools.protoc`` generates from ``speech.proto``, or a clear error naming the command."""

from __future__ import annotations

import importlib
from types import ModuleType

PROTO = "serving/grpc_api/speech.proto"
# Run from the repository root (scripts/setup.sh and serving/Dockerfile do): the modules land beside the .proto as
# serving.grpc_api.speech_pb2 and speech_pb2_grpc, with type stubs.
PROTOC_COMMAND = f"python3 -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. {PROTO}"
_MODULES = ("serving.grpc_api.speech_pb2", "serving.grpc_api.speech_pb2_grpc")


class GeneratedCodeMissingError(RuntimeError):
    """The gRPC modules were never generated (a checkout without the set-up, or an image built without the step)."""


def load() -> tuple[ModuleType, ModuleType]:
    """``(speech_pb2, speech_pb2_grpc)``."""
    try:
        messages, services = (importlib.import_module(name) for name in _MODULES)
    except ModuleNotFoundError as exc:
        if exc.name not in _MODULES:
            raise
        raise GeneratedCodeMissingError(
            f"the gRPC code generated from {PROTO} is missing ({exc.name}); run `{PROTOC_COMMAND}` in the "
            "repository root (scripts/setup.sh does), or turn the gRPC API off with SPEECH_GRPC__ENABLED=false"
        ) from exc
    return messages, services
