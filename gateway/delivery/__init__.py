"""Delivery to one client, whatever its transport: the snapshot gate, the bounded send queue, what
WebSocket and SSE sessions share."""
