"""Apps and functions as synced by the SDKs; trigger lookup for the runner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q
from pgqueue.models import AppSpec


@dataclass(frozen=True, slots=True)
class SyncResult:
    app_id: UUID
    modified: bool
    archived: tuple[str, ...]
    archived_ids: tuple[UUID, ...] = ()
    moved_from: str | None = None  # the URL the app was synced from before, when this sync changed it


async def sync(conn: Conn, spec: AppSpec) -> SyncResult:
    """Upsert the app and its functions, archive functions that disappeared. Caller owns the tx."""
    await conn.execute(q("app_lock"), {"name": spec.name})
    cur = await conn.execute(q("app_checksum"), {"name": spec.name})
    before = await cur.fetchone()
    cur = await conn.execute(
        q("app_upsert"),
        {
            "name": spec.name,
            "url": spec.url,
            "sdk_language": spec.sdk_language,
            "sdk_version": spec.sdk_version,
            "framework": spec.framework,
            "app_version": spec.app_version,
            "checksum": spec.checksum,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    app_id: UUID = row["id"]
    moved_from = before["url"] if before is not None and before["url"] != spec.url else None
    if before is not None and before["checksum"] == spec.checksum:
        return SyncResult(app_id, modified=False, archived=(), moved_from=moved_from)
    for fn in spec.functions:
        cur = await conn.execute(
            q("function_upsert"),
            {
                "app_id": app_id,
                "slug": fn.slug,
                "name": fn.name,
                "url": fn.url,
                "config": Jsonb(fn.config),
                "retries": fn.retries,
                "finish_timeout_ms": fn.finish_timeout_ms,
            },
        )
        fn_row = await cur.fetchone()
        assert fn_row is not None
        await conn.execute(q("function_triggers_clear"), {"function_id": fn_row["id"]})
        for position, trigger in enumerate(fn.triggers):
            await conn.execute(
                q("function_trigger_insert"),
                {
                    "function_id": fn_row["id"],
                    "position": position,
                    "event_name": trigger.exact_name,
                    "name_prefix": trigger.name_prefix,
                    "expression": trigger.expression,
                    "cron": trigger.cron,
                },
            )
    cur = await conn.execute(
        q("function_archive_missing"), {"app_id": app_id, "slugs": [f.slug for f in spec.functions]}
    )
    rows = await cur.fetchall()
    return SyncResult(app_id, modified=True, archived=tuple(r["slug"] for r in rows),
                      archived_ids=tuple(r["id"] for r in rows), moved_from=moved_from)


async def list_apps(conn: Conn) -> list[dict[str, Any]]:
    cur = await conn.execute(q("app_list"))
    return list(await cur.fetchall())


async def get_app(conn: Conn, ref: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("app_get"), {"ref": ref})
    return await cur.fetchone()


async def set_sync_error(conn: Conn, url: str, error: str | None) -> None:
    await conn.execute(q("app_set_sync_error"), {"url": url, "error": error})


async def list_functions(conn: Conn, app_id: UUID, *, include_archived: bool = False) -> list[dict[str, Any]]:
    cur = await conn.execute(q("function_list_for_app"), {"app_id": app_id, "include_archived": include_archived})
    return list(await cur.fetchall())


async def function_slug(conn: Conn, function_id: UUID) -> str | None:
    cur = await conn.execute(q("function_slug"), {"id": function_id})
    row = await cur.fetchone()
    return row["slug"] if row else None


async def trigger_candidates(conn: Conn, names: Sequence[str]) -> list[dict[str, Any]]:
    cur = await conn.execute(q("trigger_candidates"), {"names": list(names)})
    return list(await cur.fetchall())


async def function_by_slug(conn: Conn, slug: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("function_by_slug"), {"slug": slug})
    return await cur.fetchone()
