"""Event sessions resolved at ingest (pgqueue/events/meta.py): the cases of Inngest's own
TestResolveSessions (pkg/event/sessions_test.go) and the JS SDK's merge-patch rules
(helpers/sessions.ts), which the two keep in step with each other."""

from __future__ import annotations

from typing import Any

import pytest

from pgqueue.errors import InvalidInput
from pgqueue.events import meta

RESOLVE_CASES: list[tuple[str, Any, dict[str, str] | None]] = [
    ("no meta", None, None),
    ("empty meta", {}, None),
    ("empty layers", {"sessions": {}, "propagated_sessions": {}}, None),
    ("manual only", {"sessions": {"a": "1"}}, {"a": "1"}),
    ("propagated only", {"propagated_sessions": {"a": "1"}}, {"a": "1"}),
    ("manual wins on a key, disjoint propagated fills",
     {"sessions": {"conv_id": "manual"}, "propagated_sessions": {"conv_id": "propagated", "org_id": "42"}},
     {"conv_id": "manual", "org_id": "42"}),
    ("disjoint keys are unioned", {"sessions": {"b": "2"}, "propagated_sessions": {"a": "1"}},
     {"a": "1", "b": "2"}),
    ("manual first, propagated fills in byte order, overflow dropped",
     {"sessions": {"f": "9"}, "propagated_sessions": {k: "1" for k in "abcde"}},
     {"f": "9", "a": "1", "b": "1", "c": "1", "d": "1"}),
    ("a full manual layer evicts all propagated",
     {"sessions": {k: "9" for k in "fghij"}, "propagated_sessions": {k: "1" for k in "abcde"}},
     {k: "9" for k in "fghij"}),
    ("a shadowed propagated key takes no slot",
     {"sessions": {"a": "2", "f": "9"}, "propagated_sessions": {k: "1" for k in "abcde"}},
     {"a": "2", "f": "9", "b": "1", "c": "1", "d": "1"}),
    ("fill order is UTF-8 byte order",
     {"propagated_sessions": {"Z": "1", "a": "1", "b": "1", "c": "1", "z": "1", "é": "1"}},
     {"Z": "1", "a": "1", "b": "1", "c": "1", "z": "1"}),
    ("non-BMP order follows UTF-8 bytes, not UTF-16 code units",
     {"propagated_sessions": {"a": "1", "b": "1", "c": "1", "d": "1", "\ue000": "5", "\U0001f34e": "6"}},
     {"a": "1", "b": "1", "c": "1", "d": "1", "\ue000": "5"}),
    # RFC 7386 tombstones on the manual layer
    ("a null cuts an inherited key",
     {"sessions": {"conv_id": "manual", "cut_me": None},
      "propagated_sessions": {"conv_id": "parent", "org_id": "42", "cut_me": "inherited"}},
     {"conv_id": "manual", "org_id": "42"}),
    ("a whole-field null clears all inherited", {"sessions": None, "propagated_sessions": {"a": "1"}}, None),
    ("tombstones count against no limit",
     {"sessions": {**{k: "1" for k in "abcde"}, "x": None, "y": None}}, {k: "1" for k in "abcde"}),
    ("numbers become strings", {"sessions": {"user": 42, "n": 1.5}}, {"user": "42", "n": "1.5"}),
    ("Inngest's Go spelling of the propagated layer", {"propagatedSessions": {"a": "1"}}, {"a": "1"}),
    ("scenario: inherit", {"propagated_sessions": {"conversation": "chat-1", "user": "alice"}},
     {"conversation": "chat-1", "user": "alice"}),
    ("scenario: replace one",
     {"sessions": {"conversation": "chat-2"},
      "propagated_sessions": {"conversation": "chat-1", "user": "alice"}},
     {"conversation": "chat-2", "user": "alice"}),
]


@pytest.mark.parametrize(("raw", "want"), [(r, w) for _, r, w in RESOLVE_CASES],
                         ids=[name for name, _, _ in RESOLVE_CASES])
def test_resolve(raw: Any, want: dict[str, str] | None) -> None:
    assert meta.resolve(raw, "event 0") == want


BAD_META: list[tuple[str, Any, str]] = [
    ("meta not an object", ["x"], "`meta` must be a JSON object"),
    ("sessions not an object", {"sessions": "abc"}, "meta.sessions must be an object"),
    ("boolean id", {"sessions": {"a": True}}, "must be a string or a number"),
    ("object id", {"sessions": {"a": {"b": 1}}}, "must be a string or a number"),
    ("empty id", {"sessions": {"a": ""}}, "empty id"),
    ("empty key", {"sessions": {"": "1"}}, "keys cannot be empty"),
    ("long key", {"sessions": {"k" * (meta.MAX_KEY_BYTES + 1): "1"}}, f"longer than {meta.MAX_KEY_BYTES}"),
    ("long id", {"sessions": {"a": "i" * (meta.MAX_ID_BYTES + 1)}}, f"longer than {meta.MAX_ID_BYTES}"),
    ("six manual sessions", {"sessions": {k: "1" for k in "abcdef"}}, "at most 5 sessions"),
    ("null in the propagated layer", {"propagated_sessions": {"a": None}}, "null only cuts"),
    ("propagated not an object", {"propagated_sessions": [1]}, "must be an object"),
]


@pytest.mark.parametrize(("raw", "fragment"), [(r, f) for _, r, f in BAD_META],
                         ids=[name for name, _, _ in BAD_META])
def test_bad_meta_is_refused_with_the_reason(raw: Any, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        meta.resolve(raw, "event 3")
    assert fragment in caught.value.message
    assert caught.value.message.startswith("event 3")


def test_the_event_object_carries_meta_only_with_sessions() -> None:
    assert meta.with_meta({"name": "a"}, None) == {"name": "a"}
    assert meta.with_meta({"name": "a"}, {}) == {"name": "a"}
    assert meta.with_meta({"name": "a"}, {"s": "1"}) == {"name": "a", "meta": {"sessions": {"s": "1"}}}
