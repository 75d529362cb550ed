"""The web console: ``GET /`` serves one static page, and ``/console/<file>`` its stylesheet and JavaScript modules.

Everything the page needs ships in ``serving/console/`` (no build step, no CDN), so it works offline and on a
replica that reaches nothing outside its cluster. The page and its files are open: it holds no secret, and a
visitor types a key into it. Its Content-Security-Policy lets it talk to this server only (``'self'`` covers the
same host's ``ws:``/``wss:`` in CSP 3), so neither an injected script nor a compromised asset could send audio or a
key anywhere else.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from contract.service import CONSOLE_ASSETS_PREFIX, CONSOLE_PATH

CONSOLE_DIR = Path(__file__).with_name("console")
PAGE = "index.html"
_MEDIA_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# media-src blob: plays the synthesized speech the page fetched; default-src covers the AudioWorklet module.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "connect-src 'self'",
        "media-src 'self' blob:",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    # Revalidate on every load, so a new release's page never runs with the previous release's modules.
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["console"], include_in_schema=False)


def console_files(directory: Path = CONSOLE_DIR) -> dict[str, Path]:
    """The files the console may serve, by name: what ships in its directory with a known type, nothing else."""
    return {path.name: path for path in directory.iterdir() if path.suffix in _MEDIA_TYPES and path.is_file()}


def is_console_path(path: str) -> bool:
    return path == CONSOLE_PATH or path.startswith(CONSOLE_ASSETS_PREFIX)


@router.get(CONSOLE_PATH)
def page() -> FileResponse:
    return _file(PAGE)


@router.get(CONSOLE_ASSETS_PREFIX + "{name}")
def asset(name: str) -> FileResponse:
    return _file(name)


def _file(name: str) -> FileResponse:
    # Looked up by name in a fixed listing, never joined onto a path, so no request reaches outside the directory.
    path = console_files().get(name)
    if path is None:
        raise HTTPException(404, f"the console has no file {name[:80]!r}")
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)
