"""A schema's load, compiled once: marshmallow's result for the messages kb publishes, several times faster.

The gateway validates every broadcast once per process; at a thousand broadcasts a second
marshmallow's `load` (about 90 us for a world_update with one change) would take a tenth of a core.
`fast_load(schema)` walks the schema's declared fields once and returns a function that checks a
message the way `load` does for the field kinds the protocol uses (String, Integer, Boolean, Dict,
Raw, List, Nested), running the fields' own validators and the schema's `@validates_schema`
methods. A value it does not check exactly (a bool where an integer goes, bytes for a string, a
mapping that is not a dict), any failure, and any schema with something it does not know (another
field kind, `pre_load`/`post_load`/`@validates` hooks, `unknown` other than EXCLUDE, dotted
attributes) goes to `schema.load` itself: an error reads as marshmallow's, and nothing is accepted
that marshmallow would refuse. The schemas stay the one source of message shapes.

Reads the schema's `_hooks` (marshmallow internals), so setup.cfg pins marshmallow's minor version
and `check_marshmallow_internals` names what moved.
"""
from __future__ import annotations

import functools
from importlib.metadata import version
from typing import Any, Callable

from marshmallow import EXCLUDE, Schema, ValidationError, fields
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA
from marshmallow.utils import missing

PINNED_MARSHMALLOW = "4.4."
Convert = Callable[[Any], Any]


class _NotHere(Exception):
    """The compiled check cannot vouch for this value: marshmallow decides."""


class _Unsupported(Exception):
    """The schema has something the compiled check does not know: every load goes to marshmallow."""


@functools.cache
def fast_load(schema: Schema) -> Callable[[Any], dict[str, Any]]:
    """`schema.load`, compiled for the protocol's field kinds (see the module's note); cached per schema."""
    try:
        check = _schema_check(schema)
    except _Unsupported:
        return schema.load

    def load(data: Any) -> dict[str, Any]:
        try:
            return check(data)
        except (_NotHere, ValidationError):
            return schema.load(data)  # marshmallow's own answer or error
    return load


def _schema_check(schema: Schema) -> Callable[[Any], dict[str, Any]]:
    """A function giving `schema.load(data)` for data it can vouch for, raising _NotHere otherwise."""
    hooks = schema._hooks
    if hooks[PRE_LOAD] or hooks[POST_LOAD] or hooks[VALIDATES] or schema.unknown != EXCLUDE or schema.many:
        raise _Unsupported(type(schema).__name__)
    plan = []
    for name, field in schema.load_fields.items():
        key = field.data_key if field.data_key is not None else name
        target = field.attribute or name
        if "." in target:
            raise _Unsupported(f"{type(schema).__name__}.{name}: a dotted attribute")
        plan.append((key, target, field.required, field.load_default, _field_check(field)))
    validators = [(getattr(schema, attr), kwargs.get("pass_original", False))
                  for attr, many, kwargs in hooks[VALIDATES_SCHEMA] if not many]

    def check(data: Any) -> dict[str, Any]:
        if type(data) is not dict:
            raise _NotHere
        out: dict[str, Any] = {}
        for key, target, required, default, convert in plan:
            value = data.get(key, missing)
            if value is missing:
                if required:
                    raise _NotHere
                if default is not missing:
                    out[target] = default() if callable(default) else default
                continue
            out[target] = convert(value)
        for validator, pass_original in validators:
            if pass_original:
                validator(out, data, partial=None, many=False, unknown=EXCLUDE)
            else:
                validator(out, partial=None, many=False, unknown=EXCLUDE)
        return out
    return check


def _field_check(field: fields.Field) -> Convert:
    """What `field.deserialize` does to a present value, for the kinds the protocol uses."""
    kind = type(field)
    if kind is fields.String:
        convert = _exactly(str)
    elif kind is fields.Integer:
        convert = _exactly(int)  # a bool (an Integral too) or a numeric string: marshmallow decides
    elif kind is fields.Boolean:
        convert = _exactly(bool)
    elif kind is fields.Raw:
        def convert(value: Any) -> Any:
            return value
    elif kind is fields.Dict and field.key_field is None and field.value_field is None:  # type: ignore[attr-defined]
        def convert(value: Any) -> Any:
            if type(value) is not dict:
                raise _NotHere
            return dict(value)
    elif kind is fields.List:
        convert = _list_check(_field_check(field.inner))  # type: ignore[attr-defined]
    elif kind is fields.Nested:
        convert = _nested_check(field)  # type: ignore[arg-type]
    else:
        raise _Unsupported(f"{kind.__name__} field")
    return _checked(convert, field.allow_none, list(field.validators))


def _nested_check(field: fields.Nested) -> Convert:
    """A nested schema's compiled check, when the field loads it as a plain one-object load."""
    if field.many or field.only or field.exclude or field.unknown not in (None, EXCLUDE):
        raise _Unsupported("a Nested field with many, only, exclude or its own unknown")
    return _schema_check(field.schema)


def _exactly(kind: type) -> Convert:
    def convert(value: Any) -> Any:
        if type(value) is not kind:
            raise _NotHere
        return value
    return convert


def _list_check(item: Convert) -> Convert:
    def convert(value: Any) -> Any:
        if type(value) is not list:
            raise _NotHere
        return [item(each) for each in value]
    return convert


def _checked(convert: Convert, allow_none: bool, validators: list[Callable[[Any], Any]]) -> Convert:
    """None as the field allows it (no validators, as marshmallow), then the conversion and validators."""
    def check(value: Any) -> Any:
        if value is None:
            if allow_none:
                return None
            raise _NotHere
        out = convert(value)
        for validator in validators:
            validator(out)
        return out
    return check


class MarshmallowInternalsMoved(RuntimeError):
    """The marshmallow installed does not have what `fast_load` reads."""


def check_marshmallow_internals() -> None:
    """Fail fast, naming what moved, when marshmallow lacks what the compiled loads read."""
    missing_parts = []
    found = version("marshmallow")
    if not found.startswith(PINNED_MARSHMALLOW):
        missing_parts.append(f"version {PINNED_MARSHMALLOW}x (found {found})")
    hooks = getattr(Schema, "_hooks", None)
    if not isinstance(hooks, dict):
        missing_parts.append("Schema._hooks")
    if missing_parts:
        raise MarshmallowInternalsMoved(
            "shared/schemas/fastload.py reads marshmallow internals that this marshmallow lacks: "
            + ", ".join(missing_parts) + f"; install marshmallow {PINNED_MARSHMALLOW}x (setup.cfg pins it)")
