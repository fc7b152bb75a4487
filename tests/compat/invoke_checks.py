"""One invoke scenario shared by the Python and JS suites."""

from __future__ import annotations

import random
import string
from datetime import datetime

from tests.compat.conftest import App, Server


def fan_invoke_under_a_limit(server: Server, app: App, *, child_slug: str, parents: int = 5) -> None:
    """`parents` runs each invoke a child with `concurrency limit 1` (no invoke timeout): exactly one
    child run per parent, never two children at once, each parent called twice (the invoke, then the
    resume) and resumed within 1 s of its child's end."""
    tag = "".join(random.Random().choice(string.ascii_lowercase) for _ in range(8))
    sent = [server.send("compat/fan-invoke", {"tag": f"{tag}-{i}", "seconds": 0.3}) for i in range(parents)]
    runs = [server.wait_runs(event_id, timeout=60)[0] for event_id in sent]
    assert all(p["status"] == "Completed" for p in runs), runs
    children = [r for r in server.get(f"/v1/runs?function_id={child_slug}&limit=500")["data"]
                if ((r["output"] or {}).get("tag") or "").startswith(tag)]
    assert sorted(c["output"]["tag"] for c in children) == sorted(f"{tag}-{i}" for i in range(parents))
    spans = sorted((c["output"]["started"], c["output"]["ended"]) for c in children)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans
    ended = {c["output"]["tag"]: datetime.fromisoformat(c["ended_at"]).timestamp() for c in children}
    for parent in runs:
        assert app.count(parent["run_id"], "parent") == 2
        resumed_after = parent["output"]["resumed"] - ended[parent["output"]["child"]["tag"]]
        assert 0 < resumed_after < 1.0, parent["output"]
