"""The executable GraphQL schema: schema.graphql (Inngest's type and field names) with pgqueue's
resolvers (api/gql/resolvers.py) and scalars attached. Built once at import."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    StringValueNode,
    ValueNode,
    build_schema,
    value_from_ast_untyped,
)

from api.gql import resolvers
from pgqueue import ids

SDL = (Path(__file__).resolve().parent / "schema.graphql").read_text()


def serialize_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, str):
        return value
    raise GraphQLError(f"Time cannot represent {value!r}")


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise GraphQLError(f"Time must be an RFC 3339 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise GraphQLError(
            f"Time must be an RFC 3339 string like 2024-01-02T03:04:05Z, got {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_ulid(value: Any) -> str:
    if not isinstance(value, str):
        raise GraphQLError(f"ULID must be a string, got {value!r}")
    try:
        ids.ulid_time_ms(value)
    except ValueError as exc:
        raise GraphQLError(f"invalid ULID: {exc}") from None
    return value


def parse_uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise GraphQLError(f"UUID must be a string, got {value!r}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise GraphQLError(f"invalid UUID {value!r}") from None


def parse_map(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GraphQLError(f"Map must be a JSON object, got {json.dumps(value)[:80]}")
    return value


def _string_literal(parse: Any) -> Any:
    def parse_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
        if not isinstance(node, StringValueNode):
            raise GraphQLError("expected a string")
        return parse(node.value)

    return parse_literal


def _scalar(
    schema: GraphQLSchema, name: str, *, serialize: Any, parse_value: Any, parse_literal: Any
) -> None:
    scalar = schema.type_map[name]
    assert isinstance(scalar, GraphQLScalarType)
    # graphql-core 3.3 reads coerce_output_value / coerce_input_value; serialize and parse_value are
    # their names before 3.3, kept in step; literals go through parse_literal
    scalar.serialize = scalar.coerce_output_value = serialize  # type: ignore[method-assign]
    scalar.parse_value = scalar.coerce_input_value = parse_value  # type: ignore[method-assign]
    scalar.parse_literal = parse_literal  # type: ignore[method-assign]


def build() -> GraphQLSchema:
    schema = build_schema(SDL)
    _scalar(schema, "Time", serialize=serialize_time, parse_value=parse_time,
            parse_literal=_string_literal(parse_time))
    _scalar(schema, "ULID", serialize=str, parse_value=parse_ulid, parse_literal=_string_literal(parse_ulid))
    _scalar(schema, "UUID", serialize=str, parse_value=parse_uuid, parse_literal=_string_literal(parse_uuid))
    _scalar(schema, "Bytes", serialize=str, parse_value=str, parse_literal=_string_literal(str))
    _scalar(schema, "Map", serialize=lambda v: v, parse_value=parse_map,
            parse_literal=lambda node, variables=None: parse_map(value_from_ast_untyped(node, variables)))
    for type_name, fields in resolvers.RESOLVERS.items():
        gql_type = schema.type_map[type_name]
        assert isinstance(gql_type, GraphQLObjectType), type_name
        for field_name, resolve in fields.items():
            gql_type.fields[field_name].resolve = resolve
    return schema


SCHEMA = build()
