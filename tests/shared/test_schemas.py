"""The shared contract: schemas accept what PROTOCOL.md shows and reject what it forbids."""
from __future__ import annotations

import copy

import pytest
from marshmallow import ValidationError

from shared.schemas.errors import ErrorCode, ProtocolError
from shared.schemas.events import WorldUpdateEventSchema, validate_stream_event
from shared.schemas.messages import SERVER_MESSAGES, parse_client_message
from tests.helpers import EVENT


def test_protocol_example_event_round_trips() -> None:
    schema = WorldUpdateEventSchema()
    loaded = schema.load(copy.deepcopy(EVENT))
    assert schema.dump(loaded) == EVENT


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e.update(version="0.3"), "version"),
    (lambda e: e.update(snapshot_version=44), "snapshot_version"),
    (lambda e: e.update(base_version="41"), "base_version"),
    (lambda e: e["changes"][0].update(operation="teleport"), "changes"),
    (lambda e: e["changes"][0].pop("instance_id"), "changes"),
    (lambda e: e.pop("user_id"), "user_id"),
    (lambda e: e.update(timestamp=-1), "timestamp"),
])
def test_invalid_events_are_rejected_naming_the_field(mutate, field) -> None:
    event = copy.deepcopy(EVENT)
    mutate(event)
    with pytest.raises(ValidationError) as err:
        validate_stream_event(event)
    assert field in err.value.messages


def test_unknown_stream_event_type_is_rejected() -> None:
    with pytest.raises(ValidationError):
        validate_stream_event({"type": "surprise"})


@pytest.mark.parametrize("raw, code", [
    (b"{not json", ErrorCode.INVALID_JSON),
    (b"[1, 2]", ErrorCode.INVALID_MESSAGE),
    (b'{"type": "dance"}', ErrorCode.UNKNOWN_MESSAGE_TYPE),
    (b'{"no": "type"}', ErrorCode.UNKNOWN_MESSAGE_TYPE),
    (b'{"type": "action", "id": 1, "action": "fly"}', ErrorCode.UNKNOWN_ACTION),
    (b'{"type": "action", "id": 1, "action": "collect_item"}', ErrorCode.INVALID_MESSAGE),
    (b'{"type": "action", "action": "inventory"}', ErrorCode.INVALID_MESSAGE),
    (b'{"type": "action", "id": true, "action": "inventory"}', ErrorCode.INVALID_MESSAGE),
    (b'{"type": "resume", "last_seq": -1}', ErrorCode.INVALID_MESSAGE),
    (b'{"type": "resume", "last_seq": "7"}', ErrorCode.INVALID_MESSAGE),
])
def test_bad_client_frames_map_to_protocol_error_codes(raw: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_client_message(raw)
    assert err.value.code == code


def test_schema_errors_carry_field_messages_and_echo_the_id() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_client_message(b'{"type": "action", "id": "x1", "action": "go"}')
    assert err.value.msg_id == "x1"
    assert err.value.details == {"destination": ["Missing data for required field."]}


def test_valid_client_frames_load() -> None:
    assert parse_client_message(b'{"type":"ping","timestamp":5}') == {"type": "ping", "timestamp": 5}
    action = parse_client_message(b'{"type":"action","id":7,"action":"talk","npc_id":"louisa","extra":1}')
    assert action == {"type": "action", "id": 7, "action": "talk", "npc_id": "louisa"}


def test_every_server_message_type_of_the_protocol_has_a_schema() -> None:
    assert set(SERVER_MESSAGES) == {"connected", "area_of_interest", "world_update", "action_response", "presence",
                                    "presence_batch",
                                    "resumed", "resync_required", "pong", "error", "chat_chunk", "chat_done"}


def test_gateway_validates_each_broadcast_once_and_cuts_each_players_copy() -> None:
    import orjson

    from gateway.streams.frames import EventValidator, InvalidBroadcast
    broadcast = {k: v for k, v in EVENT.items() if k != "user_id"}
    broadcast["audience"] = [None, {"only": ["u1"]}]
    validator = EventValidator()
    payload = orjson.dumps(broadcast)
    copies = {user: orjson.loads(validator.broadcast(7, payload).frame_for(user, orjson.dumps(user)))
              for user in ("u1", "u2", "u3")}
    assert (validator.validated, validator.reused) == (1, 2)
    assert copies["u1"]["seq"] == 7 and copies["u1"]["user_id"] == "u1" and len(copies["u1"]["changes"]) == 2
    assert copies["u2"]["changes"] == [EVENT["changes"][0]] and "audience" not in copies["u2"]
    with pytest.raises(InvalidBroadcast, match="version"):
        validator.broadcast(8, orjson.dumps({**broadcast, "version": "0.3"}))
    with pytest.raises(InvalidBroadcast, match="audience"):
        validator.broadcast(9, orjson.dumps({**broadcast, "audience": [None]}))  # one entry per change
    with pytest.raises(InvalidBroadcast):  # remembered: a bad message is checked (and logged) once
        validator.broadcast(9, b"{}")
    public = orjson.loads(validator.broadcast(10, orjson.dumps({**broadcast, "audience": [None, None]}))
                          .frame_for("u9", b'"u9"'))
    assert public["seq"] == 10 and public["user_id"] == "u9" and public["changes"] == EVENT["changes"]


def test_ack_reply_subjects_of_both_forms_give_stream_and_consumer_sequences_and_pending() -> None:
    from gateway.streams.headers import ack_sequences
    assert ack_sequences("$JS.ACK.WORLD_UPDATES.abc.1.118.7.1764000000000000000.3") == (118, 7, 3)
    assert ack_sequences("$JS.ACK.hub.ACCHASH.WORLD_UPDATES.abc.1.118.7.1764000000000000000.0.tok") == (118, 7, 0)
