"""Who may connect: client addresses behind proxies, rate buckets, authentication and the experience
rule, once for every transport."""
