"""Output schemas dumped by a function built once from their fields.

marshmallow's general ``dump`` looks each field up, asks it for its value and
serializes it through several layers of calls per field: for an order with
five lines, about 70 fields, it was the largest single cost of answering
``POST /v1/orders`` after the database (docs/performance.md). A schema
deriving from ``FastDumpSchema`` keeps every marshmallow feature (it is the
same schema for the OpenAPI document and for loading), but ``dump`` runs a
plain function made of one converter per field, built the first time.

Only plain fields take the fast path: ``String``, ``Integer``, ``Boolean``,
``UtcDateTime``, and ``List``/``Nested`` of them or of other fast-dump
schemas, with no hooks, no ``only``/``exclude`` and no dump defaults.
Anything else falls back to marshmallow's own ``dump``, so the fast path can
only be faster, never different: ``tests/test_fast_dump.py`` compares the
two on real orders.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import marshmallow as ma
from marshmallow import fields
from marshmallow.utils import missing

from service.schemas_ledger import UtcDateTime

_MISSING = object()
Converter = Callable[[Any], Any]


class FastDumpSchema(ma.Schema):
    def dump(self, obj: Any, *, many: bool | None = None):
        dumper = _dumper(self)
        if dumper is None:
            return super().dump(obj, many=many)
        many = self.many if many is None else many
        return [dumper(item) for item in obj] if many else dumper(obj)


_DUMPERS: dict[type, Callable[[Any], dict] | None] = {}


def _dumper(schema: ma.Schema) -> Callable[[Any], dict] | None:
    """The schema's dump function, or None when it must not take the fast path."""
    if schema.only is not None or schema.exclude or any(schema._hooks.values()):
        return None
    kind = type(schema)
    if kind not in _DUMPERS:
        _DUMPERS[kind] = _build(schema)
    return _DUMPERS[kind]


def _build(schema: ma.Schema) -> Callable[[Any], dict] | None:
    plan = []
    for name, field in schema.dump_fields.items():
        converter = _converter(field)
        if converter is None or field.dump_default is not missing:
            return None
        plan.append((field.data_key or name, field.attribute or name, converter))

    def dump(obj: Any) -> dict:
        get = obj.get if isinstance(obj, Mapping) else lambda key, default: getattr(
            obj, key, default)
        out = {}
        for key, source, convert in plan:
            value = get(source, _MISSING)
            if value is not _MISSING:
                out[key] = None if value is None else convert(value)
        return out
    return dump


def _converter(field: fields.Field) -> Converter | None:
    """How one field turns a (not None) value into its output; None: not a
    plain field."""
    if type(field) is fields.String:
        return lambda value: value.decode() if isinstance(value, bytes) else str(value)
    if type(field) is fields.Integer and not field.as_string:
        return int
    if type(field) is fields.Boolean:
        return bool
    if type(field) is UtcDateTime:
        return lambda value: field._serialize(value, None, None)
    if type(field) is fields.List:
        inner = _converter(field.inner)
        if inner is None:
            return None
        return lambda values: [None if v is None else inner(v) for v in values]
    if type(field) is fields.Nested and isinstance(field.schema, FastDumpSchema) \
            and not field.many:
        nested = _dumper(field.schema)
        return nested
    return None
