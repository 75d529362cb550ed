"""``python -m serving [--host H] [--port P] [--grpc-port G]``: run the speech server (HTTP and gRPC).

Settings come from ``SPEECH_*`` environment variables (see ``serving/settings.py``); a bad one stops here with one
line naming it, before uvicorn starts. SIGTERM drains before uvicorn shuts down (``serving/shutdown.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from contract.service import ENV_GRPC_PORT, GRPC_PORT, SERVING_PORT
from serving.app import create_app
from serving.grpc_api.generated import GeneratedCodeMissingError
from serving.logs import uvicorn_log_config
from serving.settings import ConfigError, load_settings
from serving.shutdown import UVICORN_CLOSE_S, DrainingServer


def ws_max_size(max_frame_bytes: int) -> int:
    """Cap on a WebSocket message in the protocol layer: generous enough that oversized frames reach the session,
    which closes with a readable 1009 reason, yet small enough that nobody makes the server buffer megabytes."""
    return max(4 * max_frame_bytes, 1 << 16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description="Speech recognition server (ASR).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=SERVING_PORT, help=f"TCP port (default {SERVING_PORT})")
    parser.add_argument(
        "--grpc-port",
        type=int,
        help=f"gRPC port, on the same address (default {ENV_GRPC_PORT} or {GRPC_PORT}; 0: any free port)",
    )
    args = parser.parse_args(argv)
    grpc_overrides: dict[str, object] = {"host": args.host}
    if args.grpc_port is not None:
        grpc_overrides["port"] = args.grpc_port
    try:
        settings = load_settings(grpc=grpc_overrides)
        app = create_app(settings)
    except (ConfigError, GeneratedCodeMissingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(),
        ws_max_size=ws_max_size(settings.stream.max_frame_bytes),
        timeout_graceful_shutdown=UVICORN_CLOSE_S,
    )
    DrainingServer(config, app.state.serving).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
