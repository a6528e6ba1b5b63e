"""The NATS side: a connection's one subscription, catch-up reads, every stream of the process, per-player frames."""
