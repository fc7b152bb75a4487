"""A sync that moves an app's functions to a new URL (two apps sharing an id) warns in the sync's
answer and the log, and the apps page says so."""

from __future__ import annotations

import logging

import pytest

from tests.api.conftest import Api, function, register_body


async def test_a_sync_from_a_new_url_warns_and_the_dashboard_says_so(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    first = await api.client.post(
        "/fn/register", json=register_body(function("shop-a"), url="http://127.0.0.1:8000/api/inngest")
    )
    assert first.status_code == 200 and "warning" not in first.json()
    same = await api.client.post(
        "/fn/register", json=register_body(function("shop-a"), url="http://127.0.0.1:8000/api/inngest")
    )
    assert "warning" not in same.json()
    assert "Moved" not in (await api.client.get("/apps")).text
    with caplog.at_level(logging.WARNING, logger="api.routes.sync"):
        moved = await api.client.post(
            "/fn/register", json=register_body(function("shop-b"), url="http://127.0.0.1:3000/api/inngest")
        )
    assert moved.status_code == 200, moved.text
    warning = moved.json()["warning"]
    assert "app 'shop' was synced from http://127.0.0.1:3000/api/inngest" in warning
    assert "before from http://127.0.0.1:8000/api/inngest" in warning and "its own id" in warning
    assert any("its own id" in r.getMessage() for r in caplog.records)
    page = await api.client.get("/apps")
    assert page.status_code == 200
    assert "data-app-moved" in page.text and "http://127.0.0.1:8000/api/inngest" in page.text
    [row] = await api.rows("SELECT url, previous_url FROM pgqueue.apps WHERE name = 'shop'")
    assert row == {
        "url": "http://127.0.0.1:3000/api/inngest",
        "previous_url": "http://127.0.0.1:8000/api/inngest",
    }
