"""The duration type of policy fields (``interval``, ``maxLag``, ``after``): Go-style text
kept as written, its value parsed once by :func:`namespace.durations.parse_duration`.

A plain number is accepted too and means seconds (``after: 30``), as the CSI parameters
take it: YAML turns ``30`` into an int, and a user who wrote it meant 30 s, not an error. It
is kept as its Go-style text (``30s``), so the stored policy and status read the same
whichever way it was written. A number-like *string* (``"30"``) stays refused, as Go's
``time.ParseDuration`` refuses it: it is a typo for ``30s`` or ``30m``.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from pydantic import (
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from namespace.durations import parse_duration

# What a duration looks like as text, for the CRD's OpenAPI schema (Go's RE2 reads it too).
PATTERN = "^(0|(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$"
_NUMBER = re.compile(r"\d+\.\d*|\.?\d+")


def seconds_text(value: int | float) -> str:
    """A number of seconds as a Go-style duration (``30`` -> ``"30s"``, ``1.5`` -> ``"1.5s"``),
    never in exponent form, which the duration grammar has no place for."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            "duration must be a number of seconds or a string such as '30s', '5m' or "
            f"'1h30m', not {value!r}"
        )
    if not math.isfinite(value):
        raise ValueError(f"duration {value!r} is not a finite number of seconds")
    if value < 0:
        raise ValueError(f"duration {value!r} must not be negative")
    if isinstance(value, int) or value.is_integer():
        return f"{int(value)}s"
    return f"{Decimal(repr(value)):f}s"


class Duration(str):
    """A Go-style duration string that remembers its value in :attr:`seconds`.

    It *is* the text as written (so it serializes back unchanged); compare ``.seconds`` to
    compare lengths of time.
    """

    seconds: float

    def __new__(cls, text: str) -> Duration:
        seconds = parse_duration(text)
        obj = super().__new__(cls, text.strip())
        obj.seconds = seconds
        return obj

    def __getnewargs__(self) -> tuple[str]:  # copy/pickle re-parse the text
        return (str(self),)

    @classmethod
    def parse(cls, value: Any) -> Duration:
        """A duration from a document field: Go-style text, or a number of seconds.
        Raises ``ValueError`` naming what was wrong."""
        if isinstance(value, Duration):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text != "0" and _NUMBER.fullmatch(text):
                raise ValueError(
                    f"invalid duration {value!r}: as a string, a number needs a unit "
                    f"('{text}s'); a plain number (not a string) is seconds")
            return cls(value)
        return cls(seconds_text(value))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # What the CRD's OpenAPI schema says about a duration field: Kubernetes' own
        # int-or-string (an integer of seconds, or the text; the pattern applies to text
        # only, the minimum to numbers only).
        return {"x-kubernetes-int-or-string": True, "pattern": PATTERN, "minimum": 0}
