"""Strict, typed validation of JSON bodies and query strings, with JSON Schema output.

A schema is a frozen dataclass whose fields are annotated with a constraint::

    @dataclass(frozen=True)
    class PlaceBet:
        user_id: Annotated[str, String(min_length=1, max_length=64, pattern=USER_ID)]
        amount: Annotated[int, Integer(minimum=1, maximum=10**12)]
        auto_cashout: Annotated[int | None, Integer(minimum=101)] = None

:func:`parse` turns a decoded JSON object into an instance or raises
:class:`ValidationFailed` listing *every* bad field; :func:`json_schema` emits the
matching JSON Schema, so the OpenAPI document and the checks come from one definition
and cannot disagree. Strict means: no type coercion (``"5"`` is not an integer, ``true``
is not ``1``), no unknown fields, no missing required fields, ranges enforced, strings
that are valid Unicode (no lone surrogates, which JSON allows but UTF-8 cannot store).

Query strings are the one place where text is converted: :func:`parse_query` turns
``?limit=20`` into an ``int`` for an :class:`Integer` field, by the same rules.

Only what the API needs is supported (int, str, bool, enumerations, optional fields);
nesting can be added when a route needs it.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from crashd.api import strictjson

T = TypeVar("T")

MAX_INTEGER = 2**53 - 1
"""Largest integer a JavaScript client can hold exactly: the default bound of every
:class:`Integer`, so no amount we accept is silently rounded by a browser."""


@dataclass(frozen=True)
class Integer:
    minimum: int = -MAX_INTEGER
    maximum: int = MAX_INTEGER
    description: str = ""


@dataclass(frozen=True)
class String:
    min_length: int = 0
    max_length: int = 256
    pattern: str | None = None
    """A full-match regular expression (JSON Schema ``pattern`` is emitted anchored)."""
    description: str = ""


@dataclass(frozen=True)
class Boolean:
    description: str = ""


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings (a ``Literal`` or a ``str`` Enum field)."""

    description: str = ""


Constraint = Integer | String | Boolean | Choice


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ValidationFailed(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


MalformedJSON = strictjson.MalformedJSON
"""The body is not a single well-formed JSON document."""


@dataclass(frozen=True)
class _Field:
    name: str
    constraint: Constraint
    base: type
    optional: bool
    """``None`` is an accepted value (the annotation is ``X | None``)."""
    required: bool
    """The member must be present (the dataclass field has no default)."""
    choices: tuple[str, ...] = ()
    enum_type: type[enum.Enum] | None = None


_FIELDS_CACHE: dict[type, tuple[_Field, ...]] = {}


def _fields(schema: type) -> tuple[_Field, ...]:
    cached = _FIELDS_CACHE.get(schema)
    if cached is not None:
        return cached
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"{schema.__name__} is not a dataclass schema")
    hints = typing.get_type_hints(schema, include_extras=True)
    result = []
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        if typing.get_origin(hint) is not typing.Annotated:
            raise TypeError(
                f"{schema.__name__}.{f.name}: annotate with Annotated[type, constraint]"
            )
        inner, *meta = typing.get_args(hint)
        constraints = [m for m in meta if isinstance(m, (Integer, String, Boolean, Choice))]
        if len(constraints) != 1:
            raise TypeError(f"{schema.__name__}.{f.name}: exactly one constraint expected")
        optional = False
        if typing.get_origin(inner) in (Union, types.UnionType):
            args = [a for a in typing.get_args(inner) if a is not type(None)]
            optional = len(args) < len(typing.get_args(inner))
            if len(args) != 1:
                raise TypeError(f"{schema.__name__}.{f.name}: only `X | None` unions are supported")
            inner = args[0]
        choices: tuple[str, ...] = ()
        enum_type: type[enum.Enum] | None = None
        base: type
        if typing.get_origin(inner) is typing.Literal:
            choices = tuple(str(a) for a in typing.get_args(inner))
            base = str
        elif isinstance(inner, type) and issubclass(inner, enum.Enum):
            enum_type = inner
            choices = tuple(str(m.value) for m in inner)
            base = str
        else:
            base = inner
        expected = {Integer: int, String: str, Boolean: bool, Choice: str}[type(constraints[0])]
        if base is not expected or (isinstance(constraints[0], Choice) != bool(choices)):
            raise TypeError(f"{schema.__name__}.{f.name}: constraint does not match the type")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        result.append(_Field(f.name, constraints[0], base, optional, required, choices, enum_type))
    fields = tuple(result)
    _FIELDS_CACHE[schema] = fields
    return fields


def _check_value(field: _Field, value: Any) -> tuple[Any, str | None]:
    """Return (converted value, error message or None)."""
    if value is None:
        return None, None if field.optional else "must not be null"
    c = field.constraint
    if isinstance(c, Integer):
        # bool is a subclass of int in Python; in JSON it is not a number.
        if not isinstance(value, int) or isinstance(value, bool):
            return None, "must be an integer"
        if not c.minimum <= value <= c.maximum:
            return None, f"must be between {c.minimum} and {c.maximum}"
        return value, None
    if isinstance(c, Boolean):
        if not isinstance(value, bool):
            return None, "must be a boolean"
        return value, None
    if not isinstance(value, str):
        return None, "must be a string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, "must be valid Unicode (no lone surrogates)"
    if isinstance(c, Choice):
        if value not in field.choices:
            return None, "must be one of: " + ", ".join(field.choices)
        return (field.enum_type(value) if field.enum_type else value), None
    assert isinstance(c, String)
    if not c.min_length <= len(value) <= c.max_length:
        return None, f"length must be between {c.min_length} and {c.max_length}"
    if c.pattern is not None and re.fullmatch(c.pattern, value) is None:
        return None, f"must match {c.pattern}"
    return value, None


def parse(schema: type[T], data: Any) -> T:
    """Validate a decoded JSON value against ``schema``; all errors at once."""
    if not isinstance(data, dict):
        raise ValidationFailed([FieldError("$", "the body must be a JSON object")])
    fields = _fields(schema)
    known = {f.name for f in fields}
    errors = [FieldError(name, "unknown field") for name in data if name not in known]
    values: dict[str, Any] = {}
    for field in fields:
        if field.name not in data:
            if field.required:
                errors.append(FieldError(field.name, "is required"))
            continue
        value, message = _check_value(field, data[field.name])
        if message is not None:
            errors.append(FieldError(field.name, message))
        else:
            values[field.name] = value
    if errors:
        raise ValidationFailed(errors)
    return schema(**values)


def parse_query(schema: type[T], args: Mapping[str, list[str]]) -> T:
    """Validate query parameters (each name once) against ``schema``."""
    data: dict[str, Any] = {}
    errors: list[FieldError] = []
    by_name = {f.name: f for f in _fields(schema)}
    for name, values in args.items():
        if len(values) != 1:
            errors.append(FieldError(name, "must be given once"))
            continue
        raw = values[0]
        field = by_name.get(name)
        if field is not None and field.base is int:
            # Only plain decimal: "+1", " 1", "1_000" and "0x10" are not integers here.
            if re.fullmatch(r"-?[0-9]{1,16}", raw) is None:
                errors.append(FieldError(name, "must be an integer"))
                continue
            data[name] = int(raw)
        elif field is not None and field.base is bool:
            if raw not in ("true", "false"):
                errors.append(FieldError(name, "must be true or false"))
                continue
            data[name] = raw == "true"
        else:
            data[name] = raw
    try:
        result = parse(schema, data)
    except ValidationFailed as exc:
        raise ValidationFailed(errors + exc.errors) from None
    if errors:
        raise ValidationFailed(errors)
    return result


def decode_json(raw: bytes) -> Any:
    """Decode a request body strictly (:func:`crashd.api.strictjson.loads_bytes`: UTF-8,
    one document, no NaN/Infinity, no duplicate members, bounded nesting, no lone
    surrogates; the body size limit bounds the rest)."""
    return strictjson.loads_bytes(raw)


def json_schema(schema: type) -> dict[str, Any]:
    """The JSON Schema (2020-12, as OpenAPI 3.1 uses) of a dataclass schema."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in _fields(schema):
        c = field.constraint
        prop: dict[str, Any]
        if isinstance(c, Integer):
            prop = {"type": "integer", "minimum": c.minimum, "maximum": c.maximum}
        elif isinstance(c, Boolean):
            prop = {"type": "boolean"}
        elif isinstance(c, Choice):
            prop = {"type": "string", "enum": list(field.choices)}
        else:
            prop = {"type": "string", "minLength": c.min_length, "maxLength": c.max_length}
            if c.pattern is not None:
                prop["pattern"] = f"^(?:{c.pattern})$"
        if field.optional:
            if "enum" in prop:
                prop["enum"] = prop["enum"] + [None]
            prop["type"] = [prop["type"], "null"]
        if c.description:
            prop["description"] = c.description
        properties[field.name] = prop
        if field.required:
            required.append(field.name)
    doc: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        doc["required"] = required
    if schema.__doc__ and not schema.__doc__.startswith(schema.__name__ + "("):
        doc["description"] = schema.__doc__.strip().splitlines()[0]
    return doc
