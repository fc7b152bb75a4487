"""ULIDs and the seeded event ids of `x-inngest-event-id-seed` (Go: pkg/event/id.go)."""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time

import pytest

from pgqueue import ids

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_RE = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")


def reference_ulid(ms: int, entropy: bytes) -> str:
    """ULID per the spec, written independently: 128 bits, 26 base32 digits, most significant first."""
    value = int.from_bytes(ms.to_bytes(6, "big") + entropy, "big")
    return "".join(CROCKFORD[(value >> (5 * (25 - i))) & 31] for i in range(26))


def go_seeded_ulid(header: str, index: int) -> str:
    """Transliteration of Go's SeededIDFromString(header, index).ToULID()."""
    millis_text, entropy_text = header.split(",")
    entropy = bytearray(base64.b64decode(entropy_text))
    counter = (int.from_bytes(entropy[6:10], "big") + index) % 2**32  # uint32 wraps
    entropy[6:10] = counter.to_bytes(4, "big")
    return reference_ulid(int(millis_text), bytes(entropy))


# ---- ULIDs -------------------------------------------------------------------------------------


def test_encode_matches_the_spec() -> None:
    assert ids.encode_ulid(0, 0) == "0" * 26
    assert ids.encode_ulid(ids.MAX_TIME_MS, 2**80 - 1) == "7" + "Z" * 25
    # The ULID spec's examples: ulid(1469918176385) starts 01ARYZ6S41, and 01ARZ3NDEKTSV4RRFFQ69G5FAV.
    assert ids.encode_ulid(1_469_918_176_385, 0).startswith("01ARYZ6S41")
    assert ids.ulid_time_ms("01ARZ3NDEKTSV4RRFFQ69G5FAV") == 1_469_922_850_259
    for _ in range(500):
        ms, entropy = secrets.randbelow(2**48), secrets.token_bytes(10)
        assert ids.encode_ulid(ms, int.from_bytes(entropy, "big")) == reference_ulid(ms, entropy)


@pytest.mark.parametrize(("ms", "entropy"), [(-1, 0), (2**48, 0), (0, -1), (0, 2**80)])
def test_encode_rejects_out_of_range_parts(ms: int, entropy: int) -> None:
    with pytest.raises(ValueError):
        ids.encode_ulid(ms, entropy)


def test_new_ulid_shape_and_time() -> None:
    before = time.time_ns() // 1_000_000
    ulid = ids.new_ulid()
    after = time.time_ns() // 1_000_000
    assert ULID_RE.fullmatch(ulid)
    assert before <= ids.ulid_time_ms(ulid) <= after + 1


def test_new_ulid_at_a_given_time() -> None:
    ulid = ids.new_ulid(1_700_000_000_123)
    assert ids.ulid_time_ms(ulid) == 1_700_000_000_123
    assert ids.new_ulid(1_700_000_000_123) != ulid


def test_new_ulids_are_strictly_increasing_and_unique() -> None:
    made = [ids.new_ulid() for _ in range(20_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_new_ulids_across_threads_are_unique() -> None:
    made: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [ids.new_ulid() for _ in range(2_000)]
        assert mine == sorted(mine)
        with lock:
            made.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 8_000


def test_ulid_time_ms_accepts_lowercase_and_rejects_junk() -> None:
    ulid = ids.encode_ulid(1_469_922_850_259, 12345)
    assert ids.ulid_time_ms(ulid) == 1_469_922_850_259
    assert ids.ulid_time_ms(ulid.lower()) == 1_469_922_850_259
    for bad in ["", ulid[:-1], ulid + "0", "8" + ulid[1:], ulid[:-1] + "U", ulid[:3] + "I" + ulid[4:]]:
        with pytest.raises(ValueError):
            ids.ulid_time_ms(bad)


# ---- seeded ids ----------------------------------------------------------------------------------

GO_EXAMPLE = "1743130137367,eii2YKXRVTJPuA=="  # the example in Go's SeededIDFromString doc comment


def test_parse_event_id_seed() -> None:
    seed = ids.parse_event_id_seed(GO_EXAMPLE)
    assert seed == ids.EventIdSeed(millis=1_743_130_137_367, entropy=base64.b64decode("eii2YKXRVTJPuA=="))
    assert ids.parse_event_id_seed(f"  {GO_EXAMPLE} ") == seed
    assert ids.parse_event_id_seed("+1743130137367,eii2YKXRVTJPuA==") == seed  # Go's ParseInt allows "+"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "1743130137367",
        "1743130137367,",
        ",eii2YKXRVTJPuA==",
        "1743130137367,eii2YKXRVTJPuA==,x",
        "0,eii2YKXRVTJPuA==",
        "-1,eii2YKXRVTJPuA==",
        "1_743,eii2YKXRVTJPuA==",
        " 1743130137367,eii2YKXRVTJPuA==x",
        "1743130137367 ,eii2YKXRVTJPuA==",
        "17431301373.67,eii2YKXRVTJPuA==",
        "١٧٤٣١٣٠١٣٧٣٦٧,eii2YKXRVTJPuA==",
        f"{2**48},eii2YKXRVTJPuA==",
        f"{2**63},eii2YKXRVTJPuA==",
        "9" * 5000 + ",eii2YKXRVTJPuA==",
        "1743130137367,eii2YKXRVTJPuA",  # missing padding
        "1743130137367,eii2YKXRVTJP",  # 9 bytes
        "1743130137367,eii2YKXRVTJPuAA=",  # 11 bytes
        "1743130137367,eii2YKXRVTJPuA==" + "AAAA",
        "1743130137367,eii2YKXR-TJPuA==",  # URL-safe alphabet
        "1743130137367,eii2YKXRVTJPuA=é",
        "\udcff,\x00",
    ],
)
def test_parse_event_id_seed_malformed_is_none(header: str | None) -> None:
    assert ids.parse_event_id_seed(header) is None


def test_seeded_ulids_match_go() -> None:
    seed = ids.parse_event_id_seed(GO_EXAMPLE)
    assert seed is not None
    made = ids.seeded_ulids(seed, 5)
    # The Go event API increments its index before the first event: ids use indexes 1..n.
    assert made == [go_seeded_ulid(GO_EXAMPLE, index) for index in range(1, 6)]
    assert all(ids.ulid_time_ms(ulid) == 1_743_130_137_367 for ulid in made)
    assert made == sorted(made)
    # /invoke uses index 0.
    assert ids.seeded_ulids(seed, 1, first_index=0) == [go_seeded_ulid(GO_EXAMPLE, 0)]


def test_seeded_ulids_known_value() -> None:
    seed = ids.EventIdSeed(millis=1, entropy=bytes(10))
    assert ids.seeded_ulids(seed, 2) == ["00000000010000000000000001", "00000000010000000000000002"]


def test_seeded_ulids_are_deterministic_and_distinct() -> None:
    header = f"{int(time.time() * 1000)},{base64.b64encode(secrets.token_bytes(10)).decode()}"
    first = ids.parse_event_id_seed(header)
    again = ids.parse_event_id_seed(header)
    assert first is not None and again is not None
    assert ids.seeded_ulids(first, 5000) == ids.seeded_ulids(again, 5000)
    assert len(set(ids.seeded_ulids(first, 5000))) == 5000
    assert ids.seeded_ulids(first, 0) == []


def test_seeded_counter_wraps_like_go_uint32() -> None:
    entropy = bytes.fromhex("0102030405 06ffffffff".replace(" ", ""))
    seed = ids.EventIdSeed(millis=1_743_130_137_367, entropy=entropy)
    header = f"{seed.millis},{base64.b64encode(entropy).decode()}"
    made = ids.seeded_ulids(seed, 3)
    assert made == [go_seeded_ulid(header, index) for index in (1, 2, 3)]
    # 0xffffffff + 1 wraps to 0 without carrying into byte 5.
    assert made[0] == reference_ulid(seed.millis, bytes.fromhex("01020304050600000000"))
