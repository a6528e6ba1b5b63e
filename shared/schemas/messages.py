"""Client <-> gateway WebSocket messages: one schema per `type`, and registries keyed on it."""
from __future__ import annotations

import functools
from typing import Any

import orjson
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate, validates_schema

from shared.schemas import actions
from shared.schemas.errors import ErrorCode, ProtocolError
from shared.schemas.events import ItemSchema, PresenceBatchSchema, PresenceEventSchema, WorldUpdateEventSchema

# Every action, the built-in ones first, and what each cannot do without (checked at the edge so kb never sees half
# an action): the registry's own list and dict, which grow when GAIA_ACTION_MODULES adds actions at start.
ACTIONS: list[str] = actions.NAMES
ACTION_REQUIRES: dict[str, tuple[str, ...]] = actions.REQUIRES
NARRATORS = ("model", "builtin", "fallback")  # who wrote a chat's narrative
# Why the story is kb's message (narrator "fallback"), or, with narrator "model", `model_length`: a limit cut
# its last sentence, which was left out (gateway/chat/narration.py).
NARRATOR_REASONS = ("model_unavailable", "model_timeout", "model_error", "cancelled", "shutdown", "model_auth",
                    "model_busy", "model_leak", "model_contradiction", "model_length", "model_no_action")
MAX_SEQ = 2**63 - 1
_ID = validate.Length(min=1, max=128)
_TEXT = validate.Length(max=2000)


def _check_client_id(value: Any) -> None:
    """A client-chosen id is a short string or an integer, echoed back untouched."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or len(str(value)) > 128:
        raise ValidationError("must be a string or integer of at most 128 characters")


class _Message(Schema):
    """Base for every frame: unknown fields are ignored so clients may add their own."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True)


class ActionArgsSchema(Schema):
    """The arguments an action may carry (shared by the WebSocket and kb's HTTP API)."""

    class Meta:
        unknown = EXCLUDE

    action = fields.String(required=True, validate=validate.Length(min=1, max=64))
    instance_id = fields.String(validate=_ID)
    destination = fields.String(validate=_ID)
    npc_id = fields.String(validate=_ID)
    target_user_id = fields.String(validate=_ID)
    message = fields.String(validate=_TEXT)

    @validates_schema(pass_original=True)
    def _check_required_args(self, data: dict[str, Any], original_data: Any, **_: Any) -> None:
        """Each known action names the arguments it needs (an added action's own ones are in the original)."""
        needs = ACTION_REQUIRES.get(data.get("action", ""), ())
        given = original_data if isinstance(original_data, dict) else {}
        missing = {name: ["Missing data for required field."] for name in needs if name not in data
                   and name not in given}
        if missing:
            raise ValidationError(missing)

    @post_load(pass_original=True)
    def _own_arguments(self, data: dict[str, Any], original_data: Any, **_: Any) -> dict[str, Any]:
        """An added action's own arguments, loaded with its own fields (the shared ones above know nothing of them)."""
        spec = actions.ADDED.get(data["action"])
        if spec is None or not spec.arguments or not isinstance(original_data, dict):
            return data
        own = _own_schema(spec.name).load({k: original_data[k] for k in spec.arguments if k in original_data})
        return {**data, **own}


@functools.cache
def _own_schema(name: str) -> Schema:
    """The schema of one added action's own arguments (the registry never changes a name's spec)."""
    return Schema.from_dict(dict(actions.ADDED[name].arguments), name=f"{name}Arguments")(unknown=EXCLUDE)


def action_args_schema() -> type[Schema]:
    """ActionArgsSchema with every added action's own arguments too: what the narrator's tool and the docs describe."""
    return _with_own_arguments(tuple(actions.ADDED))


@functools.cache
def _with_own_arguments(added: tuple[str, ...]) -> type[Schema]:
    """Built once per set of added actions (a class per call would grow marshmallow's class registry)."""
    own = {n: f for name in added for n, f in actions.ADDED[name].arguments.items()}
    return type("ActionArgsSchema", (ActionArgsSchema,), dict(own)) if own else ActionArgsSchema


class ActionMessageSchema(ActionArgsSchema):
    """`action`: do something in the world; answered by `action_response` with the same id."""

    type = fields.String(required=True)
    id = fields.Raw(required=True, validate=lambda v: _check_client_id(v))


class GetStateMessageSchema(_Message):
    """`get_state`: ask for a fresh `area_of_interest`."""


MAX_ECHO_DEPTH = 32  # an echoed value nested deeper than this cannot be encoded back (orjson stops at 254)


def _shallow(value: Any, depth: int = 0) -> None:
    """Reject values nested deeper than MAX_ECHO_DEPTH (the pong must be able to echo them)."""
    if depth > MAX_ECHO_DEPTH:
        raise ValidationError(f"nested deeper than {MAX_ECHO_DEPTH} levels")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        _shallow(child, depth + 1)


class PingMessageSchema(_Message):
    """`ping`: answered by `pong` echoing the timestamp."""

    timestamp = fields.Raw(load_default=None, validate=_shallow)


class ResumeMessageSchema(_Message):
    """`resume`: replay what was missed after `last_seq` inside one socket."""

    last_seq = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=MAX_SEQ))


class ChatMessageSchema(_Message):
    """`chat`: a line the player said or typed; answered by its events, `chat_chunk`s and `chat_done`."""

    id = fields.Raw(required=True, validate=lambda v: _check_client_id(v))
    message = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    conversation_id = fields.String(validate=_ID)


CLIENT_MESSAGES: dict[str, Schema] = {
    "action": ActionMessageSchema(),
    "chat": ChatMessageSchema(),
    "get_state": GetStateMessageSchema(),
    "ping": PingMessageSchema(),
    "resume": ResumeMessageSchema(),
}


class PlayerViewSchema(Schema):
    """Where the player is and what they carry."""

    current_location = fields.String(required=True)
    current_area = fields.String(required=True)
    inventory = fields.List(fields.Nested(ItemSchema), required=True)


class RosterEntrySchema(Schema):
    """One present player and the area it stands in."""

    user_id = fields.String(required=True)
    area_id = fields.String(required=True)


class ConnectedSchema(_Message):
    connection_id = fields.String(required=True)
    user_id = fields.String(required=True)
    experience = fields.String(required=True)
    timestamp = fields.Integer(required=True)


class AreaOfInterestSchema(_Message):
    """The player's whole view of the zone at one world version."""

    snapshot_version = fields.Integer(required=True)
    zone = fields.Dict(required=True)
    areas = fields.Dict(required=True)
    player = fields.Nested(PlayerViewSchema, required=True)
    npcs = fields.Dict(load_default=dict)
    environment = fields.Dict(load_default=dict)
    players = fields.List(fields.Nested(RosterEntrySchema), required=True)


class ActionResponseSchema(_Message):
    id = fields.Raw(required=True)
    action = fields.String(required=True)
    success = fields.Boolean(required=True)
    message = fields.String(required=True)
    snapshot_version = fields.Integer(allow_none=True)


class ResumedSchema(_Message):
    from_seq = fields.Integer(required=True)
    to_seq = fields.Integer(required=True)
    replayed = fields.Integer(required=True)


class ResyncRequiredSchema(_Message):
    reason = fields.String(required=True)


class PongSchema(_Message):
    timestamp = fields.Raw(allow_none=True)


class ChatChunkSchema(_Message):
    """A piece of a chat's narrative, in order; all of a chat's world_updates came before the first."""

    id = fields.Raw(required=True)
    conversation_id = fields.String(required=True)
    delta = fields.String(required=True)


class ChatDoneSchema(_Message):
    """The end of a chat: what it did, how long it took, and who wrote the narrative (`reason`: why not the model)."""

    id = fields.Raw(required=True)
    conversation_id = fields.String(required=True)
    action = fields.String(allow_none=True)
    success = fields.Boolean(required=True)
    time_to_first_chunk_ms = fields.Float(required=True)
    total_time_ms = fields.Float(required=True)
    narrator = fields.String(required=True, validate=validate.OneOf(NARRATORS))
    reason = fields.String(validate=validate.OneOf(NARRATOR_REASONS))


class ErrorSchema(_Message):
    code = fields.String(required=True)
    message = fields.String(required=True)
    id = fields.Raw(allow_none=True)
    details = fields.Raw(allow_none=True)


SERVER_MESSAGES: dict[str, Schema] = {
    "connected": ConnectedSchema(),
    "area_of_interest": AreaOfInterestSchema(),
    "world_update": WorldUpdateEventSchema(),
    "action_response": ActionResponseSchema(),
    "chat_chunk": ChatChunkSchema(),
    "chat_done": ChatDoneSchema(),
    "presence": PresenceEventSchema(),
    "presence_batch": PresenceBatchSchema(),
    "resumed": ResumedSchema(),
    "resync_required": ResyncRequiredSchema(),
    "pong": PongSchema(),
    "error": ErrorSchema(),
}


def parse_client_message(raw: str | bytes) -> dict[str, Any]:
    """Decode and validate one client frame; raise ProtocolError with the right code."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"frame is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a frame must be a JSON object",
                            details={"_schema": ["Invalid input type."]})
    msg_type = data.get("type")
    msg_id = data.get("id") if isinstance(data.get("id"), (str, int)) else None
    schema = CLIENT_MESSAGES.get(msg_type) if isinstance(msg_type, str) else None
    if schema is None:
        raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type: {str(msg_type)[:64]!r}",
                            msg_id=msg_id)
    try:
        message = schema.load(data)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "message does not match its schema",
                            msg_id=msg_id, details=exc.messages) from exc
    if msg_type == "action" and message["action"] not in ACTIONS:
        raise ProtocolError(ErrorCode.UNKNOWN_ACTION, f"unknown action: {message['action'][:64]!r}",
                            msg_id=msg_id)
    return message


def error_frame(code: str, message: str, msg_id: Any = None, details: Any = None) -> dict[str, Any]:
    """Build an `error` frame; id and details only when present."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if msg_id is not None:
        frame["id"] = msg_id
    if details is not None:
        frame["details"] = details
    return frame
