"""One place mapping errors to HTTP answers: plain text that names the problem, as OSCAR does."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sluice.errors import Overloaded, SluiceError, Unauthorized

log = logging.getLogger("sluice.api")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SluiceError)
    async def sluice_error(_: Request, exc: SluiceError) -> PlainTextResponse:
        if exc.status_code >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        headers = None
        if isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": 'Basic realm="sluice"'}
        elif isinstance(exc, Overloaded):
            headers = {"Retry-After": str(exc.retry_after)}
        return PlainTextResponse(exc.message, status_code=exc.status_code, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> PlainTextResponse:
        # Unknown routes and wrong methods: plain text like every other error, not JSON.
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> PlainTextResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"] if part != "body")
            problems.append(f"{where or 'body'}: {error['msg']}")
        return PlainTextResponse("; ".join(problems), status_code=400)
