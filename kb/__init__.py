"""kb: the game world service (rules, persistence, the outbox that publishes every change)."""
