"""GraphQL at /v0/gql, as Inngest's dev server serves it (api/gql/): `POST` runs queries and mutations,
`GET ?query=` queries only (introspection, read-only tools). Production mode asks for the same
credentials as the REST API.

The library is graphql-core, the Python port of the reference implementation (GraphQL.js): the schema
is Inngest's SDL read as it is (schema-first, so field names cannot drift from Inngest's), its
validation is the reference one, it runs async resolvers, and it has no dependencies of its own.

Answers follow GraphQL over HTTP: `{"data": ..., "errors": [...]}`. A request that cannot run at all
(not JSON, no query, a syntax error, an invalid query, one too deep or too costly) is answered 400
with `errors` and no `data`; errors while resolving (a run that does not exist) come with 200 and
the data that could be resolved. An unexpected failure is logged and reported as an internal error,
never as a stack trace.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from graphql import (
    ExecutionResult,
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
    parse,
    validate,
)

from api import deps, limits
from api.gql import limits as gql_limits
from api.gql import resolvers
from api.gql.schema import SCHEMA
from api.routes.events import read_body
from pgqueue.errors import PgQueueError

log = logging.getLogger("pgqueue.api")

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_signing_key)])

MAX_VALIDATION_ERRORS = 20


class BadRequest(Exception):
    def __init__(self, *errors: GraphQLError, status: int = 400) -> None:
        super().__init__(errors[0].message)
        self.errors = errors
        self.status = status


def _answer(status: int, data: Any = None, errors: list[dict[str, Any]] | None = None,
            with_data: bool = True) -> JSONResponse:
    body: dict[str, Any] = {"data": data} if with_data else {}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})


def _format(error: GraphQLError) -> dict[str, Any]:
    """A resolver's pgqueue error keeps its message (and its HTTP status as `extensions.code`);
    anything unexpected is logged here and reported without its details."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return error.formatted  # type: ignore[return-value]
    if isinstance(original, PgQueueError):
        formatted = dict(error.formatted)
        formatted["message"] = original.message
        formatted["extensions"] = {"code": original.status}
        return formatted
    formatted = dict(error.formatted)
    formatted.pop("extensions", None)
    if isinstance(original, psycopg.DataError):
        formatted["message"] = "invalid value: the database could not take a value of the query"
        log.info("GraphQL value problem at %s: %s", error.path, original)
    else:
        log.error("GraphQL resolver failed at %s", error.path, exc_info=original)
        formatted["message"] = "internal server error; see the server log"
    return formatted


def _operation(request_body: dict[str, Any], *, mutations: bool) -> tuple[Any, OperationDefinitionNode,
                                                                          dict[str, Any] | None, str | None]:
    query = request_body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise BadRequest(GraphQLError("send a GraphQL query in `query` (a non-empty string)"))
    variables = request_body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise BadRequest(GraphQLError("`variables` must be a JSON object"))
    name = request_body.get("operationName")
    if name is not None and not isinstance(name, str):
        raise BadRequest(GraphQLError("`operationName` must be a string"))
    try:
        document = parse(query, max_tokens=gql_limits.MAX_TOKENS)
    except GraphQLError as exc:
        raise BadRequest(exc) from None
    operation = get_operation_ast(document, name or None)
    if operation is None:
        raise BadRequest(GraphQLError(
            f"no operation named {name!r} in the query" if name
            else "the query has several operations: say which one in `operationName`"))
    if operation.operation != OperationType.QUERY and not mutations:
        raise BadRequest(GraphQLError(f"a {operation.operation.value} must be sent with POST"), status=405)
    errors = validate(SCHEMA, document, max_errors=MAX_VALIDATION_ERRORS)
    if errors:
        raise BadRequest(*errors)
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    refused = gql_limits.check(operation, fragments, variables)
    if refused:
        raise BadRequest(*refused)
    return document, operation, variables, name


async def _run(request: Request, body: Any, *, mutations: bool) -> JSONResponse:
    if not isinstance(body, dict):
        return _answer(400, errors=[{"message": "the body must be a JSON object like {\"query\": \"...\"}"}],
                       with_data=False)
    try:
        document, _, variables, name = _operation(body, mutations=mutations)
    except BadRequest as exc:
        return _answer(exc.status, errors=[e.formatted for e in exc.errors], with_data=False)  # type: ignore[misc]
    services = getattr(request.app.state, "services", None)

    def wake() -> None:
        if services is not None:
            services.queue_wakeup.set()

    async with deps.pool(request).connection() as conn:
        context = resolvers.Context(conn=conn, wake=wake)
        result = execute(SCHEMA, document, context_value=context, variable_values=variables,
                         operation_name=name)
        if not isinstance(result, ExecutionResult):
            result = await result
    errors = [_format(e) for e in result.errors] if result.errors else None
    return _answer(200, result.data, errors)


@router.post("/v0/gql", tags=["graphql"], summary="GraphQL (Inngest's dev server API)",
             description="Queries and mutations of Inngest's dev-server schema that pgqueue serves"
                         " (runs, traces, step outputs, events, apps, functions; cancelRun, rerun,"
                         " invokeFunction). Body: `{\"query\": ..., \"variables\": {...},"
                         " \"operationName\": ...}`.")
async def graphql_post(request: Request) -> JSONResponse:
    raw = await read_body(request, limits.DEFAULT_BODY_BYTES)
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError) as exc:
        return _answer(400, errors=[{"message": f"the body is not valid JSON: {exc}"}], with_data=False)
    return await _run(request, body, mutations=True)


@router.get("/v0/gql", tags=["graphql"], summary="GraphQL queries over GET",
            description="`?query=...&variables=<JSON>&operationName=...`: queries only (a mutation must be"
                        " sent with POST).")
async def graphql_get(request: Request) -> JSONResponse:
    params = request.query_params
    body: dict[str, Any] = {"query": params.get("query"), "operationName": params.get("operationName")}
    if params.get("variables"):
        try:
            body["variables"] = json.loads(params["variables"])
        except (ValueError, RecursionError) as exc:
            message = f"`variables` is not valid JSON: {exc}"
            return _answer(400, errors=[{"message": message}], with_data=False)
    return await _run(request, body, mutations=False)
