"""The bounded JSON loader: depth measured before parsing, size, and the refusals."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iob_protocol import (
    MAX_JSON_DEPTH,
    JsonTooDeepError,
    JsonTooLargeError,
    MalformedMessageError,
    load_json,
)
from iob_protocol.boundedjson import json_depth

FAST = settings(max_examples=200, deadline=None)
MIB = 1024 * 1024

documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=20,
)


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


@FAST
@given(documents, st.booleans())
def test_the_pre_scan_measures_exactly_what_the_parser_builds(value: object, ascii_: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_, indent=None if ascii_ else 1)
    assert json_depth(text) == depth_of(value)
    assert load_json(text, max_bytes=MIB, max_depth=depth_of(value)) == value


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps(["[[[[", '\\"{{{{', "]]]", {"[": "{"}])
    assert json_depth(text) == 2
    assert load_json(text, max_bytes=MIB, max_depth=2)[1] == '\\"{{{{'


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,
        "[" * 100_000,
        '{"a":' * 40 + "1" + "}" * 40,
        '[{"x": [[' + "[" * 40 + "]" * 40 + "]]}]",
    ],
)
def test_too_deep_is_refused_before_parsing(text: str) -> None:
    with pytest.raises(JsonTooDeepError, match=f"deeper than {MAX_JSON_DEPTH} levels") as caught:
        load_json(text.encode(), max_bytes=MIB)
    assert caught.value.code == "json_too_deep"


def test_the_bound_is_inclusive() -> None:
    edge = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert json_depth(edge) == MAX_JSON_DEPTH
    load_json(edge, max_bytes=MIB)
    with pytest.raises(JsonTooDeepError):
        load_json("[" + edge + "]", max_bytes=MIB)


def test_size_is_counted_in_utf8_bytes() -> None:
    load_json('"' + "é" * 4 + '"', max_bytes=10)
    with pytest.raises(JsonTooLargeError) as caught:
        load_json('"' + "é" * 5 + '"', max_bytes=10)
    assert caught.value.code == "json_too_large"
    with pytest.raises(JsonTooLargeError):
        load_json(b"[" + b"1," * 10 + b"1]", max_bytes=20)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'[{"x": {"k": 1, "k": 1}}]', "duplicate key 'k'"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b"[-Infinity]", "-Infinity is not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b'"unterminated', "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_refusals_name_their_cause(text: bytes, message: str) -> None:
    with pytest.raises(MalformedMessageError, match=message):
        load_json(text, max_bytes=MIB)


def test_fractions_only_when_allowed() -> None:
    assert load_json(b"[1.5, 2e3]", max_bytes=MIB) == [1.5, 2000.0]
    with pytest.raises(MalformedMessageError, match="numbers must be integers"):
        load_json(b"[1.5]", max_bytes=MIB, integers_only=True)


@pytest.mark.parametrize(
    "text",
    [
        '"' + '\\"' * 300_000,  # one unterminated string full of escaped quotes
        '["' * 200_000,  # many unterminated strings
        "[]" * 300_000,
        '"\\' * 300_000,
    ],
)
def test_the_scan_is_linear_on_hostile_text(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(MalformedMessageError):
        load_json(text, max_bytes=4 * MIB, max_depth=1)
    assert time.perf_counter() - started < 1.0
