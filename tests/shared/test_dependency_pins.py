"""Internals of pinned dependencies: checked at start, with a message that names what moved."""
from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.base_protocol import BaseProtocol
from nats.aio import client as nats_client
from nats.aio.client import Client as NATS
from nats.protocol.parser import Parser

from gateway.app import create_app
from gateway.streams.natssub import NatsInternalsMoved, check_nats_internals
from gateway.ws.socket import AiohttpInternalsMoved, check_aiohttp_internals
from shared.config import Settings


def test_the_installed_aiohttp_nats_py_and_marshmallow_have_the_internals_we_use() -> None:
    from shared.schemas.fastload import check_marshmallow_internals
    check_aiohttp_internals()
    check_nats_internals()
    check_marshmallow_internals()


def test_an_aiohttp_of_another_minor_version_stops_the_gateway_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiohttp, "__version__", "3.15.0")
    with pytest.raises(AiohttpInternalsMoved, match=r"version 3\.14\.x \(found 3\.15\.0\)"):
        create_app(Settings())


def test_an_aiohttp_without_the_drain_helper_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(BaseProtocol, "_drain_helper")
    with pytest.raises(AiohttpInternalsMoved, match=r"BaseProtocol\._drain_helper"):
        check_aiohttp_internals()


def test_a_nats_py_without_send_subscribe_or_of_another_version_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nats_client, "__version__", "2.17.0")
    monkeypatch.delattr(NATS, "_send_subscribe")
    with pytest.raises(NatsInternalsMoved, match=r"2\.16\.x \(found 2\.17\.0\).*Client\._send_subscribe"):
        check_nats_internals()


def test_a_nats_py_parser_that_keeps_its_buffer_elsewhere_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def reset(self: Any) -> None:
        self.data = bytearray()
        self.state = 1
    monkeypatch.setattr(Parser, "reset", reset)
    monkeypatch.delattr(NATS, "_build_message")
    with pytest.raises(NatsInternalsMoved, match=r"Client\._build_message\(\).*Parser\.buf"):
        check_nats_internals()


def test_a_marshmallow_of_another_minor_version_or_without_hooks_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from marshmallow import Schema

    from shared.schemas import fastload
    monkeypatch.setattr(fastload, "version", lambda name: "4.5.0")
    monkeypatch.delattr(Schema, "_hooks")
    with pytest.raises(fastload.MarshmallowInternalsMoved, match=r"4\.4\.x \(found 4\.5\.0\).*Schema\._hooks"):
        fastload.check_marshmallow_internals()


def test_an_aiohttp_whose_reader_hooks_moved_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame guard sits where aiohttp's request handler keeps its payload parser, and is put there by
    the response's `_post_start`: either moved, and the gateway does not start with an unguarded reader."""
    from aiohttp import web
    from aiohttp.web_protocol import RequestHandler
    monkeypatch.delattr(web.WebSocketResponse, "_post_start")
    monkeypatch.setattr(RequestHandler, "__slots__", tuple(n for n in RequestHandler.__slots__
                                                           if n != "_payload_parser"))
    with pytest.raises(AiohttpInternalsMoved,
                       match=r"WebSocketResponse\._post_start\(\).*RequestHandler\._payload_parser"):
        check_aiohttp_internals()
