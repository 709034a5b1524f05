"""The one JSON loader for bytes that come from someone else: bounded in size and in depth.

Python's ``json`` recurses once per nesting level, and so does every walker after it: ten
kilobytes of ``[[[[`` used to reach the recursion limit (a ``RecursionError`` with a
3,000-line traceback) in the account service and inside the device's authenticated frames.
:func:`load_json` measures the nesting with a linear pre-scan of the text before
``json.loads`` sees it, so nothing recursive ever runs on a document deeper than
:data:`MAX_JSON_DEPTH`. Every part (the account service, the device, Home Assistant's clients)
reads foreign JSON through it, so the bounds and the refusals are the same everywhere.

Besides depth and size it refuses what the protocol never sends and a second parser might read
differently: duplicate object keys, ``NaN``/``Infinity``, text that is not UTF-8, and (when
asked) non-integer numbers.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, Final, NoReturn

from .errors import JsonTooDeepError, JsonTooLargeError, MalformedMessageError

#: Deeper than any message of this project (commands and API bodies nest at most five levels);
#: far below the interpreter's recursion limit, so every later walker is safe too.
MAX_JSON_DEPTH: Final = 32
#: A JSON string (terminated or not), matched in one left-to-right pass: its brackets do not
#: nest. An unterminated string runs to the end (the parser then refuses the text), so the
#: scan stays linear whatever the input.
_STRING: Final = re.compile(r'"(?:[^"\\]+|\\.)*"?', re.DOTALL)
_NOT_A_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (0 for a scalar).

    Linear in ``len(text)``: two regular-expression passes and one C-level accumulation.
    Exact for valid JSON; for invalid text it is only an estimate, and the parser refuses it.
    """
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _reject_constant(name: str) -> NoReturn:
    raise MalformedMessageError(f"{name} is not JSON")


def _reject_float(text: str) -> NoReturn:
    raise MalformedMessageError(f"numbers must be integers, got {text[:32]}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedMessageError(f"duplicate key {key[:64]!r}")
        result[key] = value
    return result


def load_json(
    data: bytes | str,
    *,
    max_bytes: int,
    max_depth: int = MAX_JSON_DEPTH,
    integers_only: bool = False,
) -> Any:
    """Parse ``data`` (UTF-8 JSON) within the bounds, or raise a :class:`MalformedMessageError`.

    Raises:
        JsonTooLargeError: more than ``max_bytes`` bytes (UTF-8).
        JsonTooDeepError: arrays and objects nested deeper than ``max_depth``.
        MalformedMessageError: not UTF-8, not JSON, a duplicate key, ``NaN``/``Infinity``, or
            (with ``integers_only``) a fraction or exponent.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise JsonTooLargeError(f"JSON text of {size} bytes; at most {max_bytes} are accepted")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as err:
        raise MalformedMessageError(f"not UTF-8: {err.reason} at byte {err.start}") from err
    # Fewer openings than the bound cannot nest past it: most messages skip the scan.
    openings = text.count("[") + text.count("{")
    if openings > max_depth and json_depth(text) > max_depth:
        raise JsonTooDeepError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_object,
            parse_constant=_reject_constant,
            parse_float=_reject_float if integers_only else float,
        )
    except json.JSONDecodeError as err:
        raise MalformedMessageError(f"not valid JSON: {err.msg} at character {err.pos}") from err
