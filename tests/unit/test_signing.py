"""Request signing and bearer checks, verified against the official Python SDK's own code."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
import pytest
from inngest._internal import errors as sdk_errors
from inngest._internal import net, server_lib, transforms

from pgqueue import errors
from pgqueue.protocol import signing
from pgqueue.protocol.canonical import canonical_bytes

RAW_KEY = "9f2c" * 16  # 64 hex digits, like `openssl rand -hex 32`
PROD_KEY = f"signkey-prod-{RAW_KEY}"
OTHER_RAW = "0a1b" * 16
NOW = 1_764_000_000

BODY = canonical_bytes(
    {
        "event": {
            "name": "shop/order.created",
            "data": {"total": 19.99, "big": 2**60, "name": "Zoë 🚀"},
            "ts": 1,
        },
        "events": [],
        "steps": {"a" * 40: {"data": 1e21}},
        "ctx": {"run_id": "01J0000000000000000000000", "attempt": 0, "stack": {"stack": [], "current": 0}},
        "version": -1,
        "use_api": False,
    }
)


def sdk_accepts(body: bytes, header: str, key: str, fallback: str | None = None) -> bool:
    result = net.validate_request_sig(
        body=body,
        headers={server_lib.HeaderKey.SIGNATURE.value: header},
        mode=server_lib.ServerKind.CLOUD,
        signing_key=key,
        signing_key_fallback=fallback,
    )
    return not isinstance(result, Exception)


# ---- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (PROD_KEY, RAW_KEY),
        (f"signkey-test-{RAW_KEY}", RAW_KEY),
        (f"signkey-branch_1-{RAW_KEY}", RAW_KEY),
        (RAW_KEY, RAW_KEY),
        ("signkey-prod-signkey-test-ab", "signkey-test-ab"),  # one prefix only, like Go
        ("signkey--ab", "signkey--ab"),  # env must be non-empty
        ("xsignkey-prod-ab", "xsignkey-prod-ab"),
    ],
)
def test_normalize_key(key: str, expected: str) -> None:
    assert signing.normalize_key(key) == expected


@pytest.mark.parametrize("key", [PROD_KEY, RAW_KEY, "ab", "ABCDEF01", f"signkey-test-{RAW_KEY.upper()}"])
def test_validate_signing_key_accepts_hex(key: str) -> None:
    assert signing.validate_signing_key(key) == key


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "is empty"),
        ("signkey-prod-", "no hex after it"),
        ("abc", "odd number of hex digits (3)"),
        ("signkey-prod-zz00", "not hex: character 1 after the prefix is 'z'"),
        (RAW_KEY + "\n", "U+000A"),
        ("my-secret-key", "not hex"),
    ],
)
def test_validate_signing_key_explains_the_problem_and_the_fix(key: str, fragment: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        signing.validate_signing_key(key, setting="INNGEST_SIGNING_KEY")
    message = caught.value.message
    assert message.startswith("INNGEST_SIGNING_KEY ")
    assert fragment in message
    assert "openssl rand -hex 32" in message
    assert "even-length hex" in message


def test_hashed_key_matches_the_sdk() -> None:
    expected = hashlib.sha256(bytes.fromhex(RAW_KEY)).hexdigest()
    assert signing.hashed_key(PROD_KEY) == expected
    assert signing.hashed_key(RAW_KEY) == expected
    assert transforms.hash_signing_key(PROD_KEY) == expected
    with pytest.raises(ValueError):
        signing.hashed_key("signkey-prod-nothex")


# ---- request signatures ----------------------------------------------------------------------


def test_sign_format_and_algorithm() -> None:
    header = signing.sign(b'{"a":1}', PROD_KEY, t=NOW)
    digest = hmac.new(RAW_KEY.encode(), b'{"a":1}' + str(NOW).encode(), hashlib.sha256).hexdigest()
    assert header == f"t={NOW}&s={digest}"


def test_sign_defaults_to_now() -> None:
    before = int(time.time())
    header = signing.sign(BODY, RAW_KEY)
    t = int(header.split("&")[0].removeprefix("t="))
    assert before <= t <= int(time.time())


@pytest.mark.parametrize("server_key", [PROD_KEY, RAW_KEY])
@pytest.mark.parametrize("sdk_key", [PROD_KEY, RAW_KEY, f"signkey-test-{RAW_KEY}"])
def test_sdk_accepts_our_signature(server_key: str, sdk_key: str) -> None:
    header = signing.sign(BODY, server_key, t=int(time.time()))
    assert sdk_accepts(BODY, header, sdk_key)


def test_sdk_signs_canonical_bodies_exactly_like_us() -> None:
    assert net.sign_request(BODY, PROD_KEY, NOW) == signing.sign(BODY, PROD_KEY, t=NOW)


def test_sdk_rejects_tampered_body_and_wrong_key() -> None:
    header = signing.sign(BODY, PROD_KEY, t=NOW)
    tampered = BODY.replace(b"19.99", b"19.98")
    assert tampered != BODY
    assert not sdk_accepts(tampered, header, PROD_KEY)
    assert not sdk_accepts(BODY, header, OTHER_RAW)


def test_sdk_uses_fallback_key_during_rotation() -> None:
    header = signing.sign(BODY, OTHER_RAW, t=NOW)
    assert sdk_accepts(BODY, header, PROD_KEY, fallback=f"signkey-prod-{OTHER_RAW}")


def test_sdk_sees_missing_signature_as_an_error() -> None:
    result = net.validate_request_sig(
        body=BODY,
        headers={},
        mode=server_lib.ServerKind.CLOUD,
        signing_key=PROD_KEY,
        signing_key_fallback=None,
    )
    assert isinstance(result, sdk_errors.HeaderMissingError)


def test_verify_round_trip_with_prefixed_and_plain_keys() -> None:
    header = signing.sign(BODY, PROD_KEY, t=NOW)
    assert signing.verify(header, BODY, [PROD_KEY], now=NOW)
    assert signing.verify(header, BODY, [RAW_KEY], now=NOW)
    assert signing.verify(header, BODY, [f"signkey-test-{RAW_KEY}"], now=NOW)


def test_verify_accepts_sdk_response_signatures() -> None:
    # SDK responses are signed over the raw body, without canonicalisation.
    body = b'{"b": 2, "a": 1}'
    header = net.sign_response(body, PROD_KEY, NOW)
    assert isinstance(header, str)
    assert signing.verify(header, body, [RAW_KEY], now=NOW + 5)


def test_verify_rejects_tampered_body_and_wrong_key() -> None:
    header = signing.sign(BODY, PROD_KEY, t=NOW)
    assert not signing.verify(header, BODY + b" ", [PROD_KEY], now=NOW)
    assert not signing.verify(header, BODY, [OTHER_RAW], now=NOW)
    assert not signing.verify(header, BODY, [], now=NOW)
    assert not signing.verify(header, BODY, [""], now=NOW)


def test_verify_accepts_any_configured_key() -> None:
    header = signing.sign(BODY, OTHER_RAW, t=NOW)
    assert signing.verify(header, BODY, [PROD_KEY, f"signkey-prod-{OTHER_RAW}"], now=NOW)
    assert signing.verify(header, BODY, ["", OTHER_RAW], now=NOW)


@pytest.mark.parametrize(
    ("skew", "valid"), [(0, True), (300, True), (-300, True), (301, False), (-301, False)]
)
def test_verify_enforces_max_age_both_ways(skew: int, valid: bool) -> None:
    header = signing.sign(BODY, PROD_KEY, t=NOW)
    assert signing.verify(header, BODY, [PROD_KEY], now=NOW + skew) is valid


def test_verify_max_age_is_configurable_and_now_defaults_to_the_clock() -> None:
    header = signing.sign(BODY, PROD_KEY, t=NOW)
    assert signing.verify(header, BODY, [PROD_KEY], now=NOW + 3600, max_age_s=3600)
    assert not signing.verify(header, BODY, [PROD_KEY])  # NOW is long past
    assert signing.verify(signing.sign(BODY, PROD_KEY), BODY, [PROD_KEY])


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=&s=",
        "s=" + "0" * 64,
        f"t={NOW}",
        f"t={NOW}&s=",
        f"t=abc&s={'0' * 64}",
        f"t=-{NOW}&s={'0' * 64}",
        f"t={NOW}.5&s={'0' * 64}",
        f"t={NOW}&s={'z' * 64}",
        f"t={NOW}&s={'0' * 63}",
        f"t={NOW}&t={NOW}&s={'0' * 64}",
        f"t={'9' * 400}&s={'0' * 64}",
        "t=\u0661\u0662\u0663&s=" + "\u0660" * 64,  # Arabic-Indic digits
        "\x00\udcff&&==",
    ],
)
def test_verify_never_raises_on_malformed_headers(header: str | None) -> None:
    assert signing.verify(header, BODY, [PROD_KEY], now=NOW) is False


def test_verify_rejects_a_forged_signature_with_valid_shape() -> None:
    real = signing.sign(BODY, PROD_KEY, t=NOW)
    forged = real[:-1] + ("0" if real[-1] != "0" else "1")
    assert not signing.verify(forged, BODY, [PROD_KEY], now=NOW)
    assert not signing.verify(real.replace(f"t={NOW}", f"t={NOW + 1}"), BODY, [PROD_KEY], now=NOW)


def test_verify_ignores_field_order_and_unknown_fields() -> None:
    t_part, s_part = signing.sign(BODY, PROD_KEY, t=NOW).split("&")
    assert signing.verify(f"{s_part}&{t_part}", BODY, [PROD_KEY], now=NOW)
    assert signing.verify(f"{t_part}&{s_part}&v=1", BODY, [PROD_KEY], now=NOW)


# ---- bearer tokens ---------------------------------------------------------------------------


def sdk_authorization(
    signing_key: str, fallback: str | None = None, accept: list[str] | None = None
) -> list[str]:
    """Send a request through the SDK's own auth code; return every Authorization header it sent.

    The mock server answers 401 unless verify_bearer accepts the header for `accept` keys.
    """
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        authorization = request.headers.get("authorization")
        seen.append(authorization or "")
        ok = signing.verify_bearer(authorization, accept or [])
        return httpx.Response(200 if ok else 401)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        response = net.fetch_with_auth_fallback_sync(
            client,
            client.build_request("POST", "http://pgqueue.test/fn/register"),
            signing_key=signing_key,
            signing_key_fallback=fallback,
        )
    assert isinstance(response, httpx.Response)
    return seen


@pytest.mark.parametrize("sdk_key", [PROD_KEY, RAW_KEY])
@pytest.mark.parametrize("server_key", [PROD_KEY, RAW_KEY, f"signkey-test-{RAW_KEY}"])
def test_sdk_bearer_token_is_accepted(sdk_key: str, server_key: str) -> None:
    seen = sdk_authorization(sdk_key, accept=[server_key])
    assert seen == [f"Bearer {transforms.hash_signing_key(sdk_key)}"]
    assert signing.verify_bearer(seen[0], [server_key])


def test_sdk_retries_with_fallback_key_and_it_is_accepted() -> None:
    seen = sdk_authorization(OTHER_RAW, fallback=PROD_KEY, accept=["", OTHER_RAW + "00", PROD_KEY])
    assert len(seen) == 2
    assert not signing.verify_bearer(seen[0], [PROD_KEY])
    assert signing.verify_bearer(seen[1], [PROD_KEY])
    assert signing.verify_bearer(seen[0], [PROD_KEY, OTHER_RAW])  # server with both keys configured


@pytest.mark.parametrize(
    "token",
    [
        RAW_KEY,
        PROD_KEY,
        f"signkey-test-{RAW_KEY}",
        signing.hashed_key(RAW_KEY),
        f"signkey-prod-{signing.hashed_key(RAW_KEY)}",  # the JS SDK keeps the prefix
    ],
)
def test_verify_bearer_accepts_raw_or_hashed_with_or_without_prefix(token: str) -> None:
    for key in (PROD_KEY, RAW_KEY):
        assert signing.verify_bearer(f"Bearer {token}", [key])
        assert signing.verify_bearer(f"bearer  {token} ", [OTHER_RAW, key])


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {RAW_KEY}",
        f"Bearer {OTHER_RAW}",
        f"Bearer {signing.hashed_key(OTHER_RAW)}",
        f"Bearer {RAW_KEY[:-2]}",
        f"Bearer {signing.hashed_key(RAW_KEY)[:-1]}",
        f"Bearer {signing.hashed_key(RAW_KEY)}0",
        f"Bearer {signing.hashed_key(RAW_KEY).upper()}",
        f"Bearer signkey-prod-{RAW_KEY[:10]}",
        "Bearer signkey-prod-",
        f"Bearer {RAW_KEY} extra",
        "Bearer \udcff\x00",
        "Bearer é",
    ],
)
def test_verify_bearer_refuses_wrong_or_truncated_tokens(authorization: str | None) -> None:
    assert signing.verify_bearer(authorization, [PROD_KEY]) is False


def test_verify_bearer_with_no_keys_or_non_hex_keys() -> None:
    assert not signing.verify_bearer(f"Bearer {RAW_KEY}", [])
    assert not signing.verify_bearer("Bearer ", [""])
    # A non-hex key (refused by validate_signing_key) still matches raw, never raises.
    assert signing.verify_bearer("Bearer not-hex", ["not-hex"])
    assert not signing.verify_bearer("Bearer other", ["not-hex"])
