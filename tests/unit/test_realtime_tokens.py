"""Subscription tokens (pgqueue/realtime/tokens.py): a token reads the one channel and the topics it
names, until it expires; a forged, tampered, foreign or expired token is refused saying why; the
fallback key is accepted during a rotation; the token request body is the SDKs' list of topics."""

from __future__ import annotations

import base64
import json

import pytest

from pgqueue.errors import InvalidInput, Unauthorized
from pgqueue.realtime import tokens

KEY = "signkey-prod-" + "ab" * 32
OLD = "signkey-prod-" + "cd" * 32
NOW = 1_800_000_000.0


def _claims(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def test_a_token_grants_its_channel_and_topics_until_it_expires() -> None:
    token = tokens.mint("user:42", ["status", "tokens", "status"], signing_keys=(KEY,), ttl_s=60, now=NOW)

    grant = tokens.verify(token, signing_keys=(KEY,), now=NOW + 59)

    assert grant == tokens.Grant("user:42", frozenset({"status", "tokens"}), int(NOW) + 60)
    assert _claims(token)["topics"] == ["status", "tokens"]
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(token, signing_keys=(KEY,), now=NOW + 60)


def test_forged_tampered_and_foreign_tokens_are_refused() -> None:
    token = tokens.mint("user:42", ["status"], signing_keys=(KEY,), ttl_s=60, now=NOW)
    header, payload, mac = token.split(".")
    widened = dict(_claims(token), channel="user:43")
    forged_payload = base64.urlsafe_b64encode(json.dumps(widened).encode()).decode().rstrip("=")
    tampered = ".".join([header, forged_payload, mac])
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=") + f".{payload}.x"

    for bad, reason in [
        (tampered, "not valid here"),
        (unsigned, "not valid here"),
        (tokens.mint("user:42", ["status"], signing_keys=(OLD,), ttl_s=60, now=NOW), "not valid here"),
        (tokens.mint("user:42", ["status"], signing_keys=(), ttl_s=60, now=NOW), "not valid here"),
        (token[:-2], "not valid here"),
        ("not-a-jwt", "malformed"),
        ("a.b.c", "not valid here"),
        ("x" * 20_000, "too long"),
        ("", "required"),
        (None, "required"),
    ]:
        with pytest.raises(Unauthorized, match=reason):
            tokens.verify(bad, signing_keys=(KEY,), now=NOW)


def test_tokens_of_the_fallback_key_are_accepted_during_a_rotation() -> None:
    old = tokens.mint("c", ["t"], signing_keys=(OLD,), ttl_s=60, now=NOW)
    new = tokens.mint("c", ["t"], signing_keys=(KEY, OLD), ttl_s=60, now=NOW)

    assert tokens.verify(old, signing_keys=(KEY, OLD), now=NOW).channel == "c"
    assert tokens.verify(new, signing_keys=(KEY,), now=NOW).channel == "c"  # minted with the current key
    with pytest.raises(Unauthorized):
        tokens.verify(old, signing_keys=(KEY,), now=NOW)


def test_dev_mode_tokens_are_keyed_by_a_constant_every_dev_process_shares() -> None:
    token = tokens.mint("c", ["t"], signing_keys=(), ttl_s=60, now=NOW)
    assert tokens.verify(token, signing_keys=(), now=NOW).topics == frozenset({"t"})
    with pytest.raises(Unauthorized):
        tokens.verify(token, signing_keys=(KEY,), now=NOW)


def test_a_token_issued_in_the_future_is_refused() -> None:
    token = tokens.mint("c", ["t"], signing_keys=(KEY,), ttl_s=3600, now=NOW + 600)
    with pytest.raises(Unauthorized, match="future"):
        tokens.verify(token, signing_keys=(KEY,), now=NOW)


def test_the_token_request_is_the_sdks_list_of_topics_of_one_channel() -> None:
    sdk_body = [{"channel": "user:42", "name": "status", "kind": "run"},
                {"channel": "user:42", "name": "tokens", "kind": "run"}]
    assert tokens.parse_request(sdk_body) == ("user:42", ["status", "tokens"])
    assert tokens.parse_request([{"channel": "c", "name": "t"}]) == ("c", ["t"])  # kind defaults to run

    for body, reason in [
        ([], "non-empty list"),
        ({"channel": "c"}, "non-empty list"),
        (["c"], "must be an object"),
        ([{"channel": "a", "name": "t"}, {"channel": "b", "name": "t"}], "one channel"),
        ([{"channel": "c", "name": "t", "kind": "event"}], 'only kind "run"'),
        ([{"channel": "", "name": "t"}], "channel must be a non-empty string"),
        ([{"channel": "c", "name": 3}], "name must be a non-empty string"),
        ([{"channel": "c" * 2000, "name": "t"}], "longer than 1024 bytes"),
        ([{"channel": "c", "name": "t"}] * 101, "at most 100 topics"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            tokens.parse_request(body)
