"""What the metadata API and an op's `metadata` are read as (pgqueue/runs/metadata.py): the scope
Inngest's API gives each target, the SDKs' hashed step ids, and the refusals, each with its reason."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from pgqueue.errors import InvalidInput
from pgqueue.runs import metadata

UPDATE = {"kind": "userland.default", "op": "set", "values": {"a": 1}}


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@pytest.mark.parametrize(("target", "where"), [
    (None, {"scope": "run", "step_id": "", "attempt": -1, "span_id": ""}),
    ({"run_id": "R"}, {"scope": "run", "step_id": "", "attempt": -1, "span_id": ""}),
    ({"step_id": "work"}, {"scope": "step", "step_id": sha1("work"), "attempt": -1, "span_id": ""}),
    ({"step_id": "work", "step_index": 0}, {"scope": "step", "step_id": sha1("work")}),
    ({"step_id": "work", "step_index": 2}, {"scope": "step", "step_id": sha1("work:2")}),
    ({"step_id": "work", "step_attempt": -1}, {"scope": "step", "step_id": sha1("work"), "attempt": -1}),
    ({"step_id": "work", "step_attempt": 1},
     {"scope": "step_attempt", "step_id": sha1("work"), "attempt": 1}),
    ({"step_id": "work", "step_attempt": 0, "span_id": "abc"},
     {"scope": "extended_trace", "step_id": sha1("work"), "span_id": "abc"}),
])
def test_the_target_decides_the_scope(target: Any, where: dict[str, Any]) -> None:
    [update] = metadata.from_request({"target": target, "metadata": [UPDATE]}, "R")
    row = update.to_row()
    assert {k: row[k] for k in where} == where
    assert (row["kind"], row["op"], row["values"]) == ("userland.default", "set", {"a": 1})


BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("not an object", [UPDATE], "must be a JSON object"),
    ("other run", {"target": {"run_id": "OTHER"}, "metadata": [UPDATE]}, "is not the run"),
    ("index without step", {"target": {"step_index": 1}, "metadata": [UPDATE]},
     "target.step_id must be defined if target.step_index is defined"),
    ("span without step", {"target": {"span_id": "s"}, "metadata": [UPDATE]},
     "target.step_id must be defined if target.span_id is defined"),
    ("attempt not an int", {"target": {"step_id": "w", "step_attempt": "1"}, "metadata": [UPDATE]},
     "target.step_attempt must be an integer"),
    ("no updates", {"target": {}, "metadata": []}, "non-empty list"),
    ("no kind", {"metadata": [{"op": "set", "values": {}}]}, "`kind`"),
    ("long kind", {"metadata": [{**UPDATE, "kind": "userland." + "k" * 120}]}, "longer than 128"),
    ("reserved kind", {"metadata": [{**UPDATE, "kind": "inngest.http.spoofed"}]}, "reserved"),
    ("unknown op", {"metadata": [{**UPDATE, "op": "replace"}]},
     "`op` must be one of merge, set, delete, add"),
    ("values not an object", {"metadata": [{**UPDATE, "values": [1]}]}, "`values` must be a JSON object"),
    ("NUL in values", {"metadata": [{**UPDATE, "values": {"a": "x\x00"}}]}, "NUL"),
    ("bad score name", {"metadata": [{"kind": "inngest.score", "op": "merge", "values": {"my-score": 1}}]},
     "score name"),
    ("score not a number",
     {"metadata": [{"kind": "inngest.score", "op": "merge", "values": {"s": {"value": "x"}}}]},
     "finite number"),
    ("score on an attempt", {"target": {"step_id": "w", "step_attempt": 0},
                             "metadata": [{"kind": "inngest.score", "op": "merge", "values": {"s": 1}}]},
     "scores target a run or a step"),
]


@pytest.mark.parametrize(("body", "fragment"), [(b, f) for _, b, f in BAD_REQUESTS],
                         ids=[name for name, _, _ in BAD_REQUESTS])
def test_bad_requests_are_refused_with_the_reason(body: Any, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        metadata.from_request(body, "R")
    assert fragment in caught.value.message
    assert caught.value.status == 400


def test_an_update_over_64_kb_is_413() -> None:
    values = {"b": "x" * (metadata.MAX_UPDATE_BYTES - 3)}  # key + quotes: exactly 64 KB
    [ok] = metadata.from_request({"metadata": [{**UPDATE, "values": values}]}, "R")
    assert ok.size == metadata.MAX_UPDATE_BYTES
    with pytest.raises(metadata.MetadataTooLarge) as caught:
        metadata.from_request({"metadata": [{**UPDATE, "values": {"b": values["b"] + "x"}}]}, "R")
    assert caught.value.status == 413
    assert "65537 bytes" in caught.value.message


def test_scores_as_the_js_sdk_sends_them() -> None:
    """{name: {value}} from step.score / inngest.score (a bare number and a boolean too)."""
    body = {"metadata": [{"kind": "inngest.score", "op": "merge",
                          "values": {"accuracy": {"value": 0.75}, "raw": 3, "passed": {"value": True}}}]}
    [update] = metadata.from_request(body, "R")
    assert update.values["accuracy"] == {"value": 0.75}


def test_an_ops_metadata_targets_its_step() -> None:
    raw = [{"kind": "userland.a", "scope": "run", "op": "set", "values": {}},
           {"kind": "userland.b", "scope": "step", "op": "merge", "values": {"x": 1}},
           {"kind": "userland.c", "scope": "step_attempt", "op": "set", "values": {}}]
    rows = [u.to_row() for u in metadata.from_op(raw, step_id="h1", attempt=2, label="work")]
    assert [(r["scope"], r["step_id"], r["attempt"]) for r in rows] == [
        ("run", "", -1), ("step", "h1", -1), ("step_attempt", "h1", 2)]
    with pytest.raises(metadata.InvalidMetadata) as caught:
        metadata.from_op([{**raw[0], "scope": "extended_trace"}], step_id="h1", attempt=0, label="work")
    assert caught.value.message.startswith("the metadata of step 'work'[0]: `scope`")


def test_the_step_error_names_why() -> None:
    assert metadata.metadata_error(metadata.MetadataTooLarge("m"))["name"] == "MetadataTooLarge"
    invalid = metadata.metadata_error(metadata.InvalidMetadata("m"))
    assert invalid == {"name": "InvalidMetadata", "message": "m"}
