"""WorldUpdateEvent v0.4 and presence events: client frames, and their broadcast form on world.updates.exp.{id}."""
from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from shared.schemas.fastload import fast_load

EVENT_VERSION = "0.4"
OPERATIONS = ("add", "remove", "update")
_ID = validate.Length(min=1, max=128)


class ItemSchema(Schema):
    """An item instance as it lies in an area spot or an inventory."""

    class Meta:
        unknown = EXCLUDE

    instance_id = fields.String(required=True, validate=_ID)
    template_id = fields.String(required=True, validate=_ID)
    type = fields.String(required=True)
    semantic_name = fields.String(required=True)
    description = fields.String(load_default="")
    visible = fields.Boolean(load_default=True)
    state = fields.Dict(load_default=dict)


class ChangeSchema(Schema):
    """One delta: add/remove an item (area spot or inventory) or update a value at a path."""

    class Meta:
        unknown = EXCLUDE

    operation = fields.String(required=True, validate=validate.OneOf(OPERATIONS))
    area_id = fields.String(required=True, allow_none=True)
    spot_id = fields.String(allow_none=True)
    path = fields.String()
    instance_id = fields.String(validate=_ID)
    template_id = fields.String()
    item = fields.Nested(ItemSchema)
    value = fields.Raw(allow_none=True)

    @validates_schema
    def _check_operation_fields(self, data: dict[str, Any], **_: Any) -> None:
        """Each operation names what it touches."""
        op = data.get("operation")
        if op in ("add", "remove") and not data.get("instance_id"):
            raise ValidationError("required for add/remove", "instance_id")
        if op == "add" and "item" not in data and "value" not in data:
            raise ValidationError("add needs item or value", "item")
        if op == "update" and not data.get("path"):
            raise ValidationError("required for update", "path")
        if op in ("add", "remove") and data.get("area_id") is not None and not data.get("spot_id") \
                and not data.get("path"):
            raise ValidationError("an area change needs spot_id or path", "spot_id")


class MetadataSchema(Schema):
    """Where an event came from, for tracing."""

    class Meta:
        unknown = EXCLUDE

    source = fields.String(load_default="kb")
    trace_id = fields.String(load_default="")


class WorldUpdateEventSchema(Schema):
    """WorldUpdateEvent v0.4: one committed change as one user may see it."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.Equal("world_update"))
    version = fields.String(required=True, validate=validate.Equal(EVENT_VERSION))
    experience = fields.String(required=True, validate=_ID)
    user_id = fields.String(required=True, validate=_ID)
    actor_id = fields.String(required=True, validate=_ID)
    base_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    snapshot_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    timestamp = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    changes = fields.List(fields.Nested(ChangeSchema), required=True)
    metadata = fields.Nested(MetadataSchema, load_default=lambda: {"source": "kb", "trace_id": ""})
    seq = fields.Integer(strict=True, validate=validate.Range(min=1))

    @validates_schema
    def _check_versions(self, data: dict[str, Any], **_: Any) -> None:
        """A committed change moves the world version by exactly one."""
        base, snap = data.get("base_version"), data.get("snapshot_version")
        if base is not None and snap is not None and snap != base + 1:
            raise ValidationError("must equal base_version + 1", "snapshot_version")


class AudienceSchema(Schema):
    """Who may see one change of a broadcast: nobody is named when everyone may."""

    class Meta:
        unknown = EXCLUDE

    # The protocol names this field "only"; it shadows Schema.only, which a declared field may.
    only = fields.List(fields.String(validate=_ID), required=True)  # type: ignore[assignment]


class BroadcastWorldUpdateSchema(WorldUpdateEventSchema):
    """The bus form of a WorldUpdateEvent: one message per commit on the experience subject.

    No `user_id`: the gateway makes each player's copy, keeping change i only when `audience[i]`
    is null or names the player, and setting `user_id` to the player.
    """

    user_id = fields.String(validate=_ID)
    audience = fields.List(fields.Nested(AudienceSchema, allow_none=True), required=True)

    @validates_schema
    def _check_audience(self, data: dict[str, Any], **_: Any) -> None:
        """One audience entry per change."""
        if len(data.get("audience", [])) != len(data.get("changes", [])):
            raise ValidationError("must have one entry per change", "audience")


class PresenceEventSchema(Schema):
    """A player of the experience arrived, left, or moved to another area."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.Equal("presence"))
    event = fields.String(required=True, validate=validate.OneOf(("join", "leave", "move")))
    user_id = fields.String(required=True, validate=_ID)
    experience = fields.String(required=True, validate=_ID)
    area_id = fields.String(allow_none=True)
    timestamp = fields.Integer(strict=True)
    seq = fields.Integer(strict=True, validate=validate.Range(min=1))


class PresenceChangeSchema(Schema):
    """One player's join or leave inside a presence_batch."""

    class Meta:
        unknown = EXCLUDE

    event = fields.String(required=True, validate=validate.OneOf(("join", "leave")))
    user_id = fields.String(required=True, validate=_ID)
    area_id = fields.String(allow_none=True)


class PresenceBatchSchema(Schema):
    """Several players' joins and leaves of one announcement window, in order, in one frame."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.Equal("presence_batch"))
    experience = fields.String(required=True, validate=_ID)
    changes = fields.List(fields.Nested(PresenceChangeSchema), required=True, validate=validate.Length(min=1))
    timestamp = fields.Integer(strict=True)
    seq = fields.Integer(strict=True, validate=validate.Range(min=1))


STREAM_EVENT_SCHEMAS: dict[str, Schema] = {
    "world_update": WorldUpdateEventSchema(),
    "presence": PresenceEventSchema(),
    "presence_batch": PresenceBatchSchema(),
}


BROADCAST_SCHEMAS: dict[str, Schema] = {
    "world_update": BroadcastWorldUpdateSchema(),
    "presence": PresenceEventSchema(),
    "presence_batch": PresenceBatchSchema(),
}


def _load_by_type(data: Any, schemas: dict[str, Schema]) -> dict[str, Any]:
    """Load an event with the registry's schema for its `type`; ValidationError if it is not one."""
    if not isinstance(data, dict):
        raise ValidationError("event must be an object")
    schema = schemas.get(data.get("type"))  # type: ignore[arg-type]
    if schema is None:
        raise ValidationError(f"unknown event type {data.get('type')!r}", "type")
    return fast_load(schema)(data)  # marshmallow's result, compiled (fastload.py)


def validate_broadcast(data: Any) -> dict[str, Any]:
    """Load a message of an experience subject (broadcast world_update or presence)."""
    return _load_by_type(data, BROADCAST_SCHEMAS)


def validate_stream_event(data: Any) -> dict[str, Any]:
    """Load an event addressed to one user (world_update with user_id, or presence)."""
    return _load_by_type(data, STREAM_EVENT_SCHEMAS)
