"""Marshmallow schemas: the single source of every message shape."""
