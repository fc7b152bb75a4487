"""Every error leaves the API as `{"error": "<message>", "status": <code>}`, the shape both SDKs parse."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from pgqueue.errors import PgQueueError

log = logging.getLogger("pgqueue.api")


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(PgQueueError)
    async def _pgqueue_error(_: Request, exc: PgQueueError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # its loc is a character offset, not a field
            detail = (first.get("ctx") or {}).get("error")
            return error_response(400, f"request body is not valid JSON: {detail}" if detail else
                                  "request body is not valid JSON")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = first.get("msg", "invalid request")
        return error_response(400, f"{where}: {message}" if where else message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "not found"
        return error_response(exc.status_code, message)

    # A database without the pgqueue schema (or with an older one): 503 naming the fix, so SDKs retry.
    @app.exception_handler(psycopg.errors.UndefinedTable)
    @app.exception_handler(psycopg.errors.UndefinedFunction)
    @app.exception_handler(psycopg.errors.InvalidSchemaName)
    async def _schema(request: Request, exc: Exception) -> JSONResponse:
        log.error("schema problem on %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            503,
            "the database schema is missing or out of date: run `pgqueue migrate` (or start with --migrate)",
        )

    # A value PostgreSQL cannot take (a NUL character in a string, a number or date out of range)
    # came from the request: the caller's mistake, so 400 naming the problem, not a 500.
    @app.exception_handler(psycopg.DataError)
    async def _bad_value(request: Request, exc: Exception) -> JSONResponse:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.info("invalid value on %s %s: %s", request.method, request.url.path, detail)
        if "NUL" in detail:
            return error_response(
                400, "the request contains a NUL character (\\u0000), which PostgreSQL cannot store"
            )
        return error_response(400, f"invalid value: {detail}")

    # The client hung up while its body was being read (a stream it cancelled, a timeout): nobody
    # gets this answer, and it is not a server error.
    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
        log.info("client closed the connection during %s %s", request.method, request.url.path)
        return error_response(400, "the client closed the connection before its request was read")

    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, f"database unavailable ({type(exc).__name__}); retry later")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error; see the server log")
