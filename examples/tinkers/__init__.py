"""Tinker's Cellar: a game that adds open, close and craft to the built-in actions (docs/authoring.md)."""
