"""The duration type of policy fields (``interval``, ``maxLag``, ``after``): Go-style text
kept as written, its value parsed once by :func:`namespace.durations.parse_duration`."""
from __future__ import annotations

from typing import Any

from pydantic import (
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from namespace.durations import parse_duration

# -- durations ------------------------------------------------------------------------------

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
    def _validate(cls, value: Any) -> Duration:
        return value if isinstance(value, Duration) else cls(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # What the CRD's OpenAPI schema says about a duration field.
        return {"type": "string", "pattern": "^(0|(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$"}


