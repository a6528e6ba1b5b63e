"""The legacy Server-Sent Events transport: GET /sse/experience and POST /chat/unified."""
