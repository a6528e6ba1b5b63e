"""The WebSocket transport: GET /ws/experience, its session, its writer, its chat messages."""
