"""The contract kb and gateway share: config, schemas, NATS subjects, auth."""
