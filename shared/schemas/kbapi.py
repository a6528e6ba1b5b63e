"""kb's HTTP API bodies (gateway -> kb): actions, presence and their answers."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from shared.schemas.events import ChangeSchema
from shared.schemas.messages import ActionArgsSchema
from shared.subjects import BadSubjectToken, check_token

_ID = validate.Length(min=1, max=128)


def _user_id(value: str) -> None:
    """A user id is one safe subject token, matched whole (no trailing newline, no separators)."""
    try:
        check_token(value)
    except BadSubjectToken as exc:
        raise ValidationError("not a valid user id") from exc


def _experience(value: str) -> None:
    """An experience id is one safe subject token too (it names the experience's subject)."""
    try:
        check_token(value)
    except BadSubjectToken as exc:
        raise ValidationError("not a valid experience id") from exc


class ActionRequestSchema(ActionArgsSchema):
    """POST /experiences/{exp}/actions: the gateway acts for the user it authenticated."""

    user_id = fields.String(required=True, validate=_user_id)
    trace_id = fields.String(load_default="", validate=validate.Length(max=128))


class ActionResultSchema(Schema):
    """The outcome of one action as kb committed it (or refused it)."""

    class Meta:
        unknown = EXCLUDE

    success = fields.Boolean(required=True)
    message = fields.String(required=True)
    snapshot_version = fields.Integer(required=True)
    changes = fields.List(fields.Nested(ChangeSchema), required=True)


class PresenceSessionSchema(Schema):
    """One live session as a gateway reports it."""

    class Meta:
        unknown = EXCLUDE

    session_id = fields.String(required=True, validate=_ID)
    user_id = fields.String(required=True, validate=_user_id)
    experience = fields.String(required=True, validate=_experience)


class PresenceUpdateSchema(Schema):
    """POST /presence: sessions that joined, left (clean or dropped) or are still alive."""

    class Meta:
        unknown = EXCLUDE

    gateway_id = fields.String(required=True, validate=_ID)
    # A gateway process's first report: a newer incarnation of its slot (shared/incarnations.py)
    # ends the sessions older ones left behind, even before it has any session of its own.
    hello = fields.Boolean(load_default=False)
    join = fields.List(fields.Nested(PresenceSessionSchema), load_default=list)
    leave = fields.List(fields.Nested(PresenceSessionSchema), load_default=list)
    drop = fields.List(fields.Nested(PresenceSessionSchema), load_default=list)
    alive = fields.List(fields.Nested(PresenceSessionSchema), load_default=list)


MAX_VIEWS = 500


class ViewSessionSchema(Schema):
    """One session asking for its snapshot (and joining, as GET .../state with a session id)."""

    class Meta:
        unknown = EXCLUDE

    user_id = fields.String(required=True, validate=_user_id)
    session_id = fields.String(required=True, validate=_ID)
    gateway_id = fields.String(load_default="unknown", validate=validate.Length(max=128))


class ViewsRequestSchema(Schema):
    """POST /experiences/{exp}/views: the snapshots of sessions that connected at about the same time."""

    class Meta:
        unknown = EXCLUDE

    sessions = fields.List(fields.Nested(ViewSessionSchema), required=True,
                           validate=validate.Length(min=1, max=MAX_VIEWS))
