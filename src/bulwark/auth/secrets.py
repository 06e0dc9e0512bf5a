"""Client secrets and passwords: generating them, and storing only Argon2id hashes of them.

For secrets a person may choose or see (user passwords, application client secrets). Bulwark's own
256-bit random credentials (sensor credentials, onboarding keys) are stored as a SHA-256 digest
instead: ``bulwark.domain.sensors.digest_credential``.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Entra ID client secrets are 40 characters; 30 random bytes make exactly 40 URL-safe characters.
CLIENT_SECRET_BYTES = 30

# argon2-cffi's defaults follow RFC 9106's second recommended profile (Argon2id, 64 MiB, t=3).
_hasher = PasswordHasher()


def new_client_secret() -> str:
    """Return a new client secret: 40 URL-safe characters carrying 240 random bits."""
    return secrets.token_urlsafe(CLIENT_SECRET_BYTES)


def hash_password(secret: str) -> str:
    """Return the Argon2id hash (PHC string, salt included) to store instead of `secret`."""
    if not secret:
        raise ValueError("cannot hash an empty secret")
    return _hasher.hash(secret)


def verify_password(secret: str, secret_hash: str) -> bool:
    """Return whether `secret` matches a hash from `hash_password`; a malformed hash never matches."""
    try:
        return _hasher.verify(secret_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(secret_hash: str) -> bool:
    """Return whether a stored hash uses weaker parameters than today's and should be replaced on next login."""
    try:
        return _hasher.check_needs_rehash(secret_hash)
    except (InvalidHashError, ValueError):
        return True
