"""Errors on the OpenAI-compatible routes in OpenAI's shape, so OpenAI's clients raise them with their message.

OpenAI answers ``{"error": {"message", "type", "param", "code"}}``; its Python client reads ``error.message`` into
the exception it raises (``BadRequestError``, ``AuthenticationError``, ...), so a client of ours sees why. Every
other route keeps FastAPI's ``{"detail": ...}``. The gate's refusals (``serving/gate.py``) and a route's
``HTTPException`` pass through here.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from contract.service import OPENAI_PREFIX

# OpenAI's code for the statuses our routes answer with; a route may name a more precise one.
_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    408: "upload_timeout",
    413: "file_too_large",
    415: "unsupported_file_format",
    421: "wrong_jurisdiction",
    422: "unprocessable_audio",
    499: "client_abort",
    500: "internal_error",
    503: "unavailable",
}


class InvalidRequest(HTTPException):
    """A bad parameter of an OpenAI-compatible request: ``param`` names the form field, ``code`` says what is wrong."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_value", status_code: int = 400) -> None:
        super().__init__(status_code, message)
        self.param = param
        self.code = code


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code or _CODES.get(status)}}


def error_response(
    path: str, status: int, message: str, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    """The refusal of a request to ``path``, shaped as that route's clients expect; ``extra`` keys join the body."""
    body = error_body(status, message) if is_openai_path(path) else {"detail": message}
    return JSONResponse({**body, **extra}, status, headers)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException) or not is_openai_path(request.url.path):
        return await http_exception_handler(request, exc)  # type: ignore[arg-type]
    body = error_body(
        exc.status_code, str(exc.detail), param=getattr(exc, "param", None), code=getattr(exc, "code", None)
    )
    return JSONResponse(body, exc.status_code, exc.headers)
