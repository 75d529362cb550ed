"""ASGI middleware that runs before any route: who may call what, how big a body may be and how long it may take,
and the request metrics.

Both are plain ASGI callables rather than ``BaseHTTPMiddleware`` so they can answer before the application calls
``receive()``: a request without a valid key, or one that declares a body over its limit, is refused without a
byte of its body being read (an unauthenticated 200 MB JSON once cost 600 MB before its 401). Bodies that are
read are counted and timed as they stream in, and refused with 413 or 408 the moment they overstep.

Which key a path needs: ``OPEN_PATHS`` and the web console's page and files (``serving/web.py``) none; admin
paths an admin key, and they are off when none is configured; everything else (the API, ``/docs``,
``/openapi.json``, unknown paths) a transcription key when auth is on. A key whose tenant's data may not be
processed in this replica's jurisdiction gets 421 and its regional endpoints (``serving/residency.py``) on any API
path, again before any audio is read.
WebSockets pass through: the stream route authenticates after accepting, so a refused client reads a close code.
Refusals on OpenAI-compatible paths are OpenAI-shaped (``serving/openai_errors.py``), so OpenAI's clients show why.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable

from fastapi import APIRouter
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contract.service import API_PREFIX, HEALTH_PATH, METRICS_PATH, READINESS_PATH, REGION_HEADER
from serving.auth import ADMIN_OFF_DETAIL, ADMIN_UNAUTHORIZED_DETAIL, UNAUTHORIZED_DETAIL
from serving.openai_errors import error_response
from serving.residency import MISDIRECTED
from serving.settings import LimitsSettings
from serving.state import ServingState
from serving.web import is_console_path

OPEN_PATHS = frozenset({HEALTH_PATH, READINESS_PATH, METRICS_PATH})
# Probes and scrapes are frequent and uninteresting; counting them would drown the traffic that matters.
UNMEASURED_PATHS = OPEN_PATHS
# Bodies of routes that take JSON or nothing: a reload request is a few bytes.
CONTROL_BODY_BYTES = 64 * 1024
_CLOSE = {"Connection": "close"}  # the unread body is abandoned, so the connection cannot carry another request
_CHALLENGE = {"WWW-Authenticate": "Bearer", **_CLOSE}


class RouteTemplates:
    """The app's route templates (``/v1/speakers/{speaker_id}/enroll``), to name a path before routing has run:
    which limit its body gets, and its ``route`` label when the gate refuses it."""

    def __init__(self, routes: list[tuple[str, re.Pattern[str]]]) -> None:
        self._routes = routes

    @classmethod
    def of(cls, routers: Iterable[APIRouter]) -> RouteTemplates:
        found = [r for router in routers for r in router.routes if isinstance(r, Route | WebSocketRoute)]
        return cls([(r.path, r.path_regex) for r in found])

    def template_of(self, path: str) -> str | None:
        return next((template for template, pattern in self._routes if pattern.match(path)), None)


class RequestGate:
    """Authentication and body bounds, before the route and before the body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: ServingState,
        admin_paths: frozenset[str],
        upload_paths: frozenset[str],
        routes: RouteTemplates,
    ) -> None:
        self.app = app
        self._state = state
        self._admin_paths = admin_paths
        self._upload_paths = upload_paths
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, headers = scope["path"], Headers(scope=scope)
        refusal = self._refusal(path, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        limits = self._state.settings.limits
        is_upload = self._routes.template_of(path) in self._upload_paths
        limit = limits.max_upload_bytes if is_upload else CONTROL_BODY_BYTES
        too_big = _too_big_detail(limit, is_upload)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse_declared(path, declared, too_big)(scope, receive, send)
            return
        bounded = _BoundedBody(receive, limit, too_big, limits, self._state)
        await self.app(scope, bounded.receive, send)

    def _refusal(self, path: str, headers: Headers) -> JSONResponse | None:
        state = self._state
        if path in OPEN_PATHS or is_console_path(path):
            return None
        if path in self._admin_paths:
            if not state.admin_auth.is_enabled:
                state.metrics.error(state.current_version(), "admin_off")
                return error_response(path, 403, ADMIN_OFF_DETAIL, _CLOSE)
            if not state.admin_auth.is_allowed(headers):
                state.metrics.error(state.current_version(), "unauthorized")
                return error_response(path, 401, ADMIN_UNAUTHORIZED_DETAIL, _CHALLENGE)
            return None
        if not state.auth.is_allowed(headers):
            state.metrics.error(state.current_version(), "unauthorized")
            return error_response(path, 401, UNAUTHORIZED_DETAIL, _CHALLENGE)
        misdirected = state.residency.refusal(state.auth.home_jurisdiction(headers))
        if misdirected is not None and path.startswith(API_PREFIX):
            route = self._routes.template_of(path) or "unmatched"
            state.metrics.residency_refused(state.current_version(), misdirected.jurisdiction, route)
            details = {k: v for k, v in misdirected.body().items() if k != "detail"}
            return error_response(path, MISDIRECTED, misdirected.detail, _CLOSE, **details)
        return None

    def _refuse_declared(self, path: str, declared: str, too_big: str) -> JSONResponse:
        self._state.metrics.error(self._state.current_version(), "too_large")
        if not declared.isdigit():
            return error_response(path, 400, f"Content-Length {declared[:40]!r} is not a byte count", _CLOSE)
        return error_response(path, 413, too_big, _CLOSE)


class _BoundedBody:
    """Wraps ``receive``: counts body bytes against ``limit`` and times the upload, raising 413 or 408 on overstep.

    Raised from inside the route's body read, the ``HTTPException`` becomes the response (and the route's
    ``finally`` blocks release whatever it had taken, such as its queue slot).
    """

    def __init__(self, receive: Receive, limit: int, too_big: str, limits: LimitsSettings, state: ServingState) -> None:
        self._receive = receive
        self._limit = limit
        self._too_big = too_big
        self._idle_s = limits.upload_idle_timeout_s
        self._total_s = limits.upload_timeout_s
        self._state = state
        self._size = 0
        self._deadline: float | None = None
        self._is_complete = False

    async def receive(self) -> Message:
        if self._is_complete:
            return await self._receive()  # after the body: waiting for a disconnect is not an upload
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self._total_s
        wait = min(self._idle_s, self._deadline - loop.time())
        try:
            async with asyncio.timeout(max(wait, 0)):
                message = await self._receive()
        except TimeoutError:
            self._state.metrics.error(self._state.current_version(), "upload_timeout")
            raise HTTPException(408, self._timeout_detail(), _CLOSE) from None
        if message["type"] == "http.request":
            self._size += len(message.get("body", b""))
            if self._size > self._limit:
                self._state.metrics.error(self._state.current_version(), "too_large")
                raise HTTPException(413, self._too_big, _CLOSE)
            self._is_complete = not message.get("more_body", False)
        return message

    def _timeout_detail(self) -> str:
        return (
            f"the upload stalled or was too slow: {self._size} bytes arrived, then nothing for "
            f"{self._idle_s:g} s or the whole body took over {self._total_s:g} s "
            "(SPEECH_LIMITS__UPLOAD_IDLE_TIMEOUT_S, SPEECH_LIMITS__UPLOAD_TIMEOUT_S); send the whole body promptly"
        )


def _too_big_detail(limit: int, is_upload: bool) -> str:
    if is_upload:
        return f"the upload exceeds {limit} bytes (SPEECH_LIMITS__MAX_UPLOAD_BYTES)"
    return f"the request body exceeds {limit} bytes, the most this route takes"


class RequestMetrics:
    """Counts every HTTP request by route and status, including those the gate refused before routing.

    The ``route`` label is the route's template when routing ran, else the template the path matches, else
    ``unmatched``: never a path a client made up.
    """

    def __init__(self, app: ASGIApp, *, state: ServingState, routes: RouteTemplates) -> None:
        self.app = app
        self._state = state
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNMEASURED_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the application fails before responding

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            version = scope.get("state", {}).get("model_version") or self._state.current_version()
            self._state.metrics.request(version, self._route_of(scope), status, time.perf_counter() - started)

    def _route_of(self, scope: Scope) -> str:
        route = getattr(scope.get("route"), "path", None)
        if route is not None:
            return route
        return self._routes.template_of(scope["path"]) or "unmatched"


class RegionHeader:
    """Names this replica's region (``REGION_HEADER``) on every HTTP response and WebSocket handshake.

    Outermost, so refusals of the gate and errors carry it too: a client checks where its audio went on every answer,
    not only on success.
    """

    def __init__(self, app: ASGIApp, *, region: str) -> None:
        self.app = app
        self._header = (REGION_HEADER.lower().encode(), region.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_region(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message = {**message, "headers": [*message.get("headers", []), self._header]}
            await send(message)

        await self.app(scope, receive, send_with_region)
