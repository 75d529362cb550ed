"""Logging without personal data: what the server logs never holds audio, a transcript or a key, at any level.

At debug level the WebSocket library traces every frame it sends and receives with the first bytes of its payload
(the samples of every audio frame, the start of every partial and final transcript) and every handshake header (an
API key). uvicorn hands the library its own ``uvicorn.error`` logger, so its records are told apart by the file that
logged them (inside the ``websockets`` package): a frame trace keeps its direction, type and length but loses its
payload, and the library's other debug lines are dropped. The server's own log lines never include audio or text;
``tests/serving/test_nothing_at_rest.py`` proves both against a real process at debug level.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import uvicorn.config
import websockets
from websockets.frames import Frame

_WEBSOCKETS_PACKAGE = str(Path(websockets.__file__).resolve().parent)


class RedactFrameTraces(logging.Filter):
    """The WebSocket library's debug traces without payloads or headers; every other record as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG or not str(Path(record.pathname).resolve()).startswith(_WEBSOCKETS_PACKAGE):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        frames = [arg for arg in args if isinstance(arg, Frame)]
        if not frames:
            return False
        direction = record.getMessage()[:1]
        record.msg, record.args = (
            "%s %s [%d bytes, payload not logged]",
            (direction, frames[0].opcode.name, len(frames[0].data)),
        )
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with frame traces redacted in the logger the WebSocket library uses."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_frame_traces"] = {"()": f"{__name__}.RedactFrameTraces"}
    config["loggers"]["uvicorn.error"]["filters"] = ["redact_frame_traces"]
    return config
