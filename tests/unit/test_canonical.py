"""canonical_bytes against the `jcs` package (the reference the Python SDK verifies with) and RFC 8785."""

from __future__ import annotations

import collections
import enum
import json
import math
import random
import struct
from typing import Any

import jcs
import pytest
from inngest._internal import transforms

from pgqueue.protocol.canonical import canonical_bytes, format_float, format_int


def reference(value: Any) -> bytes:
    out = jcs.canonicalize(value)
    assert isinstance(out, bytes)
    return out


def assert_canonical(value: Any) -> bytes:
    out = canonical_bytes(value)
    assert out == reference(value)
    # What the Python SDK does before checking a signature: parse, re-canonicalise. Our bytes
    # must survive that unchanged, or signed requests would be refused.
    assert jcs.canonicalize(json.loads(out)) == out
    assert transforms.canonicalize(out) == out
    return out


# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical spelling.
RFC_8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def double(bits_hex: str) -> float:
    return struct.unpack(">d", bytes.fromhex(bits_hex))[0]


@pytest.mark.parametrize(("bits", "expected"), RFC_8785_NUMBERS)
def test_rfc_8785_number_vectors(bits: str, expected: str) -> None:
    value = double(bits)
    assert format_float(value) == expected
    assert assert_canonical(value) == expected.encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-0.0, "0"),
        (0.0, "0"),
        (1.0, "1"),
        (-100.0, "-100"),
        (19.99, "19.99"),
        (1e16, "10000000000000000"),
        (1.5e16, "15000000000000000"),
        (123e-20, "1.23e-18"),
        (1e300, "1e+300"),
        (0.0001, "0.0001"),
        (0.00001, "0.00001"),
        (2.5e-5, "0.000025"),
        (1.25e21, "1.25e+21"),
        (5e-324, "5e-324"),
        (12345678.9, "12345678.9"),
    ],
)
def test_float_spelling(value: float, expected: str) -> None:
    assert assert_canonical(value) == expected.encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (-1, "-1"),
        (2**53, "9007199254740992"),
        (-(2**53), "-9007199254740992"),
        # Beyond 2**53 an int becomes the nearest double, as in the Go server: precision is lost.
        (2**53 + 1, "9007199254740992"),
        (2**53 + 3, "9007199254740996"),
        (2**60, "1152921504606847000"),
        (-(2**63), "-9223372036854776000"),
        (10**21, "1e+21"),
        (12345678901234567890, "12345678901234567000"),
        (10**308, "1e+308"),
    ],
)
def test_int_spelling(value: int, expected: str) -> None:
    assert format_int(value) == expected
    assert assert_canonical(value) == expected.encode()


def test_rfc_8785_example_object() -> None:
    # RFC 8785 §3.2.2 / §3.2.3 example.
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert assert_canonical(json.loads(source)) == expected.encode()


def test_keys_sort_by_utf16_code_units() -> None:
    # RFC 8785 §3.2.3's sorting example: U+1F600 (surrogates D83D DE00) sorts before U+FB33,
    # although its code point is larger.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    out = assert_canonical(value)
    assert list(json.loads(out)) == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize(
    "value",
    [
        {"\uffff": 1, "\U00010000": 2},
        {"a\ue000": 1, "a\U0010ffff": 2, "a": 3, "a\ud7ff": 4},
        {"nested": [{"\uff01x": 1, "\U0001f600y": 2}], "plain": "no astral here"},
        {"emoji value": "\U0001f680", "z": 1, "a": 2},  # astral only in values: fast sort path
        {"\ue000": {"\U0001f600": 1, "\ue001": 2}},
    ],
)
def test_non_bmp_key_ordering(value: Any) -> None:
    assert_canonical(value)


@pytest.mark.parametrize(
    "text",
    [
        "".join(chr(c) for c in range(0x20)),
        '"quoted" \\ back/slash',
        "\x7f del stays literal",
        "\u2028\u2029 line separators stay literal",
        "é ü ß 中文 \U0001f600",
        "",
        "\u00a0\ufeff",
    ],
)
def test_string_escaping(text: str) -> None:
    out = assert_canonical({text: text})
    assert json.loads(out) == {text: text}


def test_control_characters_use_short_escapes_then_lowercase_hex() -> None:
    assert canonical_bytes("\b\t\n\f\r\x00\x1f") == b'"\\b\\t\\n\\f\\r\\u0000\\u001f"'


def test_literals_and_containers() -> None:
    for value in [None, True, False, [], {}, [[]], {"a": {}}, [None, True, False, 0, ""], ()]:
        assert_canonical(value)
    assert canonical_bytes({"b": [1, 2, (3, 4)], "a": None}) == b'{"a":null,"b":[1,2,[3,4]]}'


def test_subclasses_encode_as_their_base_type() -> None:
    class Colour(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    class Ratio(float):
        pass

    value = collections.OrderedDict([("z", Colour.RED), ("a", Name("x")), ("m", Ratio(2.0))])
    assert canonical_bytes(value) == b'{"a":"x","m":2,"z":1}'
    assert canonical_bytes([Colour.RED, Name("y"), Ratio(0.5), True]) == b'[1,"y",0.5,true]'


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1, {"x": math.nan}], 10**400, -(10**400)])
def test_non_finite_numbers_raise_value_error(value: Any) -> None:
    with pytest.raises(ValueError):
        canonical_bytes(value)


@pytest.mark.parametrize("value", ["\ud800", {"k": "a\udfffb"}, {"\ud83d": 1}, ["ok", "\udc00"]])
def test_lone_surrogates_raise_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match="surrogate"):
        canonical_bytes(value)


def test_lone_surrogate_key_next_to_astral_key_raises_value_error() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        canonical_bytes({"\ud800": 1, "\U0001f600": 2, "\uff01": 3})


@pytest.mark.parametrize("value", [{1: "a"}, {"a": {2: 1, 10: 2}}, {None: 1}, [{"ok": 1, 3.5: 2}]])
def test_non_str_keys_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="keys must be str"):
        canonical_bytes(value)


@pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes", {"a": [1, {"b": 1j}]}])
def test_non_json_types_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        canonical_bytes(value)


def test_cycles_raise_value_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="cycle"):
        canonical_bytes(loop)


# ---- randomised comparison with the reference -------------------------------------------------

_ALPHABETS = [
    "abcxyzABC019_-. ",
    "".join(chr(c) for c in range(0x20)) + '"\\/',
    "éüß中文\u0080\u00ff\u07ff\u0800\ud7ff",
    "\ue000\uf8ff\ufb33\uff01\ufffd\uffff",
    "\U00010000\U0001f600\U0001f680\U0010ffff",
]


def random_string(rng: random.Random) -> str:
    alphabet = "".join(rng.sample(_ALPHABETS, rng.randint(1, len(_ALPHABETS))))
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))


def random_double(rng: random.Random) -> float:
    choice = rng.random()
    if choice < 0.4:
        while True:
            value = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0]
            if math.isfinite(value):
                return value
    if choice < 0.6:
        return rng.uniform(-1000, 1000)
    if choice < 0.8:
        return round(rng.uniform(-1e6, 1e6), rng.randint(0, 4))
    value = float(rng.choice([1, -1]) * 10.0 ** rng.randint(-330, 308)) * rng.choice([1, 1.5, 2.5e-3, 7])
    return value if math.isfinite(value) else 1.5


def random_int(rng: random.Random) -> int:
    bits = rng.choice([4, 16, 32, 52, 53, 54, 63, 64, 100, 300])
    return rng.choice([1, -1]) * rng.getrandbits(bits)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "float", "null", "bool"] + (["list", "dict", "dict"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return random_string(rng)
    if kind == "int":
        return random_int(rng)
    if kind == "float":
        return random_double(rng)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {random_string(rng): random_value(rng, depth + 1) for _ in range(rng.randint(0, 6))}


@pytest.mark.parametrize("seed", range(20))
def test_random_values_match_reference(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        assert_canonical(random_value(rng))


def test_random_doubles_match_reference_and_round_trip() -> None:
    rng = random.Random(8785)
    for _ in range(20_000):
        value = random_double(rng)
        text = format_float(value)
        assert text.encode() == reference(value)
        assert float(text) == value or (value == 0 and float(text) == 0)


def test_random_ints_match_reference() -> None:
    rng = random.Random(53)
    for _ in range(5_000):
        value = random_int(rng)
        assert format_int(value).encode() == reference(value)


def test_typical_event_payload() -> None:
    event = {
        "name": "shop/order.created",
        "id": "01HZX4Q5W8J6K9M2N3P4R5S6T7",
        "ts": 1_717_171_717_171,
        "data": {
            "order": {"id": "ord_1", "total": 19.99, "items": [{"sku": "A-1", "qty": 2, "price": 5.0}]},
            "customer": {"email": "ada@example.com", "tags": ["vip", "β-tester"]},
            "note": "Ship by 1.05 or v2.0.",
        },
        "user": {},
    }
    body = {
        "event": event,
        "events": [event],
        "steps": {},
        "ctx": {"run_id": "x", "attempt": 0},
        "use_api": False,
    }
    assert_canonical(body)
