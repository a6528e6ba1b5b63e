"""JWT issue/verify helpers (PyJWT) with the algorithm pinned by config."""
from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import sys
import time
from dataclasses import dataclass
from typing import Any

import jwt

from shared.config import Settings
from shared.subjects import BadSubjectToken, check_token

# RFC 7518 3.2: an HMAC key at least as long as the hash's output.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def refuse_weak_jwt_secret(settings: Settings) -> None:
    """Exit with a clear message when tokens would be signed with an empty secret, or (outside dev) a short one."""
    algorithm = settings.jwt_algorithm.upper()
    if algorithm not in MIN_SECRET_BYTES or settings.jwt_jwks_url:
        return  # public keys from a JWKS: no shared secret is used
    size, needed = len(settings.jwt_secret.encode()), MIN_SECRET_BYTES[algorithm]
    if size == 0:
        raise SystemExit(f"refusing to start: GAIA_JWT_SECRET is empty; {algorithm} tokens need a random secret of "
                         f"at least {needed} bytes (for example `openssl rand -hex {needed}`)")
    if size < needed and settings.env != "dev":
        raise SystemExit(f"refusing to start: GAIA_JWT_SECRET has {size} bytes; {algorithm} needs at least {needed} "
                         f"(RFC 7518 3.2), random (for example `openssl rand -hex {needed}`)")


MIN_API_KEY_BYTES = 32  # the kb service key is a shared secret too: as strong as an HS256 JWT secret


def refuse_weak_api_key(settings: Settings) -> None:
    """Exit with a clear message when kb's service key is empty, or (outside dev) shorter than a JWT secret must be."""
    size = len(settings.kb_api_key.encode())
    if size == 0:
        raise SystemExit("refusing to start: GAIA_KB_API_KEY is empty; gateways and kb share a random key of at "
                         f"least {MIN_API_KEY_BYTES} bytes (for example `openssl rand -hex {MIN_API_KEY_BYTES}`)")
    if size < MIN_API_KEY_BYTES and settings.env != "dev":
        raise SystemExit(f"refusing to start: GAIA_KB_API_KEY has {size} bytes; it needs at least {MIN_API_KEY_BYTES}, "
                         f"random (for example `openssl rand -hex {MIN_API_KEY_BYTES}`)")


class TokenError(Exception):
    """A token that is missing, malformed, expired or otherwise not acceptable."""


@dataclass(frozen=True)
class Identity:
    """The verified caller: user id from `sub`, and when the token stops being valid."""

    user_id: str
    expires_at: float


def issue_token(settings: Settings, user_id: str, ttl_s: float = 24 * 3600.0) -> str:
    """Sign a token for user_id with the configured secret (dev and tests only)."""
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "nbf": now, "exp": now + int(ttl_s)}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithm)


def verify_token(settings: Settings, token: str | None, key: Any = None) -> Identity:
    """Verify signature, exp/nbf (with leeway) and optional aud/iss; return the identity.

    `key` is the public key for RS256/ES256 (from a JWKS); by default the shared secret.
    """
    if not token:
        raise TokenError("missing token")
    options: Any = {"require": ["sub", "exp"], "verify_aud": bool(settings.jwt_audience)}  # PyJWT's Options
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret if key is None else key,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience or None,
            issuer=settings.jwt_issuer or None,
            leeway=settings.jwt_leeway_s,
            options=options,
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"invalid token: {type(exc).__name__}") from exc
    # Compared, not subtracted: an `exp` of 10**400 is a valid int that no float can hold.
    if not isinstance(claims["exp"], (int, float)) or claims["exp"] > time.time() + settings.jwt_max_lifetime_s:
        raise TokenError(f"invalid token: expires more than {settings.jwt_max_lifetime_s:.0f} s from now")
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise TokenError("invalid token: sub must be a string")
    try:
        check_token(sub)
    except BadSubjectToken as exc:
        raise TokenError("invalid token: unusable user id") from exc
    return Identity(user_id=sub, expires_at=float(claims["exp"]))


class TokenVerifier:
    """Verifies tokens with the shared secret, or with keys from a JWKS URL (RS256/ES256)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=300, timeout=5) \
            if settings.jwt_jwks_url else None
        # The shared secret prepared once, not once per handshake (a few percent of a connect storm).
        self.secret = jwt.PyJWK({"kty": "oct", "k": base64.urlsafe_b64encode(settings.jwt_secret.encode()).rstrip(
            b"=").decode()}, algorithm=settings.jwt_algorithm) if settings.jwt_algorithm.startswith("HS") else None

    async def verify(self, token: str | None) -> Identity:
        """The identity in a valid token, or TokenError (the JWKS fetch runs off the event loop)."""
        if self.jwks is None or not token:
            return verify_token(self.settings, token, self.secret)
        try:
            signing_key = await asyncio.get_running_loop().run_in_executor(
                None, self.jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {type(exc).__name__}") from exc
        return verify_token(self.settings, token, signing_key.key)


def bearer_token(header_value: str | None) -> str | None:
    """Extract the token from an `Authorization: Bearer <jwt>` header value."""
    if not header_value:
        return None
    scheme, _, value = header_value.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented service key with the configured one."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def main(argv: list[str] | None = None) -> None:
    """Print a dev token: `python -m shared.auth <user_id> [--ttl SECONDS]`."""
    parser = argparse.ArgumentParser(description="Print a dev JWT for a user id")
    parser.add_argument("user_id")
    parser.add_argument("--ttl", type=float, default=24 * 3600.0, help="lifetime in seconds")
    args = parser.parse_args(argv)
    try:
        check_token(args.user_id)
    except BadSubjectToken:
        parser.error("user id may use letters, digits and _-@:+= only (1-128 chars)")
    settings = Settings.from_env()
    token = issue_token(settings, args.user_id, args.ttl)
    print(token)  # alone on stdout, so `TOKEN=$(make -s token USER=bob)` captures just the token
    print(f"live page for {args.user_id}: http://127.0.0.1:{settings.gateway_port}/?token={token}", file=sys.stderr)


if __name__ == "__main__":
    main()
