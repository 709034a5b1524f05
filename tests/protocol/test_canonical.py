"""Deterministic encodings: one byte string per value, everything else refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iob_protocol import (
    MAX_JSON_DEPTH,
    EncodingError,
    JsonTooDeepError,
    MalformedMessageError,
    NonCanonicalMessageError,
    b64url_decode,
    b64url_encode,
    canonical_json,
    encode_fields,
    parse_canonical_json,
)
from iob_protocol.canonical import JSON_INT_MAX, base32_decode, base32_encode

FAST = settings(max_examples=50, deadline=None)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-JSON_INT_MAX, JSON_INT_MAX)
    | st.text(st.characters(codec="utf-8"), max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = (
    st.binary(max_size=20)
    | st.text(max_size=20).filter(lambda text: all(not 0xD800 <= ord(c) <= 0xDFFF for c in text))
    | st.integers(-(2**63), 2**63 - 1)
    | st.booleans()
)
field_maps = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), field_values, max_size=5
)


@FAST
@given(json_values)
def test_canonical_json_round_trip(value: object) -> None:
    encoded = canonical_json(value)  # type: ignore[arg-type]
    assert parse_canonical_json(encoded) == value
    assert canonical_json(parse_canonical_json(encoded)) == encoded


@FAST
@given(field_maps, field_maps)
def test_encode_fields_is_injective(a: dict[str, object], b: dict[str, object]) -> None:
    same = encode_fields("iob/v1/t", a) == encode_fields("iob/v1/t", b)  # type: ignore[arg-type]
    assert same == (
        a.keys() == b.keys() and all(type(a[k]) is type(b[k]) and a[k] == b[k] for k in a)
    )


def test_encode_fields_separates_domains_and_types() -> None:
    assert encode_fields("iob/v1/a", {"x": 1}) != encode_fields("iob/v1/b", {"x": 1})
    assert encode_fields("iob/v1/a", {"x": True}) != encode_fields("iob/v1/a", {"x": 1})
    assert encode_fields("iob/v1/a", {"x": "1"}) != encode_fields("iob/v1/a", {"x": b"1"})
    # Order of insertion does not matter.
    assert encode_fields("iob/v1/a", {"x": 1, "y": 2}) == encode_fields(
        "iob/v1/a", {"y": 2, "x": 1}
    )


@pytest.mark.parametrize(
    ("domain", "fields"),
    [
        ("", {}),
        ("Upper", {}),
        ("iob/v1/a", {"Bad": 1}),
        ("iob/v1/a", {"x": 2**63}),
        ("iob/v1/a", {"x": "\ud800"}),
        ("iob/v1/a", {"x": 1.5}),
    ],
)
def test_encode_fields_refuses(domain: str, fields: dict[str, object]) -> None:
    with pytest.raises(EncodingError):
        encode_fields(domain, fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (b'{"a":1.5}', MalformedMessageError),
        (b'{"a":NaN}', MalformedMessageError),
        (b'{"a":1,"a":1}', MalformedMessageError),
        (b"\xff", MalformedMessageError),
        (b"[" * 100_000, MalformedMessageError),
        # Parsed by the C scanner, then overflowed the canonical check's recursion (a 500).
        (b"[" * 5000 + b"]" * 5000, JsonTooDeepError),
        (b"[" * 800 + b"]" * 800, JsonTooDeepError),
        (b'{"a":' * 33 + b"1" + b"}" * 33, JsonTooDeepError),
        (b'{"a":99999999999999999999}', MalformedMessageError),
        (b'{"b":1,"a":1}', NonCanonicalMessageError),
        (b'{"a": 1}', NonCanonicalMessageError),
        (b'"\\u0041"', NonCanonicalMessageError),
    ],
)
def test_parse_refuses(text: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_canonical_json(text)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_the_deepest_canonical_json_reads_back_and_one_level_more_is_refused() -> None:
    deepest = canonical_json(_nested(MAX_JSON_DEPTH))  # type: ignore[arg-type]
    assert parse_canonical_json(deepest) == _nested(MAX_JSON_DEPTH)
    with pytest.raises(EncodingError, match="deeper than 32"):
        canonical_json(_nested(MAX_JSON_DEPTH + 1))  # type: ignore[arg-type]
    # A value built in code is checked with bounded recursion too.
    with pytest.raises(EncodingError):
        canonical_json(_nested(5000))  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1.5, {1: 2}, b"x", 2**60, "\udc80", [object()]])
def test_canonical_json_refuses(value: object) -> None:
    with pytest.raises(EncodingError):
        canonical_json(value)  # type: ignore[arg-type]


@FAST
@given(st.binary(max_size=64))
def test_b64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data
    assert "=" not in b64url_encode(data)


@pytest.mark.parametrize("text", ["AB=", "A", "AB+/", "AB C", "AF"])
def test_b64url_refuses(text: str) -> None:
    with pytest.raises(EncodingError):
        b64url_decode(text)


@FAST
@given(st.integers(0, 6).flatmap(lambda n: st.binary(min_size=5 * n, max_size=5 * n)))
def test_base32_round_trip(data: bytes) -> None:
    assert base32_decode(base32_encode(data)) == data


def test_base32_refuses() -> None:
    with pytest.raises(EncodingError):
        base32_encode(b"1234")
    with pytest.raises(EncodingError):
        base32_decode("ABC")
    with pytest.raises(EncodingError):
        base32_decode("ABCDEFGI")
