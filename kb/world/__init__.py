"""The functional core: world content, the state model and pure rules."""
