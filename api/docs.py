"""GET /docs: the REST API described from the app's own OpenAPI document, as one server-rendered page
without scripts. FastAPI's default page loads Swagger UI from a CDN (an unpinned `@5` without
integrity hashes: whoever serves that file runs code in this origin, next to the dashboard's
session), which the Content-Security-Policy would refuse anyway; /redoc did the same and is gone.
`/openapi.json` stays for tools (Swagger UI, Redoc, Postman and the like, run on their own origin).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from pgqueue import __version__

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "dashboard" / "templates"))
router = APIRouter(include_in_schema=False)
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    where: str  # path, query, header, body
    type: str
    required: bool
    description: str


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    summary: str
    description: str
    fields: list[Field]
    anchor: str


def type_name(schema: dict[str, Any]) -> str:
    """A short readable type: `string`, `integer ≥ 1`, `list[string]`, `date-time?` (optional)."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        return " | ".join(type_name(s) for s in options) + ("?" if nullable else "")
    kind = str(schema.get("format") or schema.get("type") or "any")
    if kind == "array":
        return f"list[{type_name(schema.get('items') or {})}]"
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    bounds = [f"≥ {schema['minimum']}" if "minimum" in schema else "",
              f"≤ {schema['maximum']}" if "maximum" in schema else ""]
    return " ".join([kind, *filter(None, bounds)])


def _body_fields(operation: dict[str, Any], components: dict[str, Any]) -> list[Field]:
    content = (operation.get("requestBody") or {}).get("content") or {}
    schema = (content.get("application/json") or {}).get("schema") or {}
    if "$ref" in schema:
        schema = components.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
    required = set(schema.get("required", ()))
    return [Field(name, "body", type_name(prop), name in required, str(prop.get("description", "")))
            for name, prop in (schema.get("properties") or {}).items()]


def operations(spec: dict[str, Any]) -> dict[str, list[Operation]]:
    """The document's operations grouped by their first tag, in document order."""
    components = (spec.get("components") or {}).get("schemas") or {}
    groups: dict[str, list[Operation]] = {}
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            fields = [Field(p["name"], p["in"], type_name(p.get("schema") or {}), bool(p.get("required")),
                            str(p.get("description", ""))) for p in op.get("parameters", ())]
            fields += _body_fields(op, components)
            anchor = f"{method}{path}".replace("/", "-").replace("{", "").replace("}", "")
            summary, description = str(op.get("summary", "")), str(op.get("description", ""))
            groups.setdefault((op.get("tags") or ["other"])[0], []).append(
                Operation(method.upper(), path, summary, description, fields, anchor)
            )
    return groups


@router.get("/docs", response_class=HTMLResponse)
async def api_docs(request: Request) -> HTMLResponse:
    spec = request.app.openapi()
    response = templates.TemplateResponse(request, "api_docs.html", {
        "info": spec.get("info", {}), "openapi": spec.get("openapi", ""), "groups": operations(spec),
        "version": __version__,
        "production": request.app.state.settings.production,
    })
    response.headers["cache-control"] = "no-store"
    return response
