"""RSA signing keys for issued tokens: generation, rotation, retirement and the public JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bulwark.clock import Clock

SIGNING_ALGORITHM = "RS256"
DEFAULT_KEY_SIZE = 2048


class KeyRingError(ValueError):
    """The set of signing keys cannot do what was asked (no active key, two active keys, ...)."""


def _rsa_members(public_key: rsa.RSAPublicKey) -> tuple[str, str]:
    jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    return jwk["n"], jwk["e"]


def jwk_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """Return the RFC 7638 SHA-256 JWK thumbprint of an RSA public key, base64url without padding."""
    n, e = _rsa_members(public_key)
    # RFC 7638 section 3.2: required members only, lexicographic order, no whitespace.
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def public_jwk(public_key: rsa.RSAPublicKey, kid: str) -> dict[str, str]:
    """Return the public JWK of an RSA key as published in a JWKS document."""
    n, e = _rsa_members(public_key)
    return {"kty": "RSA", "use": "sig", "alg": SIGNING_ALGORITHM, "kid": kid, "n": n, "e": e}


@lru_cache(maxsize=64)
def _load_private_key(pem: str) -> rsa.RSAPrivateKey:
    # Loading checks the RSA key, which takes tens of milliseconds; records re-read from a store
    # carry the same PEM, so each key is loaded once per process.
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyRingError("signing keys must be RSA keys")
    return key


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")


@dataclass(frozen=True)
class SigningKey:
    """One RSA key pair that signs (when active) or verifies tokens; plain data, easy to store.

    `kid` is the RFC 7638 thumbprint of the public key. A key with `retired_at` set no longer
    verifies anything; an inactive key that is not retired still verifies tokens it signed earlier.
    """

    kid: str
    private_key_pem: str
    created_at: datetime
    retired_at: datetime | None = None
    active: bool = False

    def __post_init__(self) -> None:
        _require_aware("created_at", self.created_at)
        _require_aware("retired_at", self.retired_at)
        if self.active and self.retired_at is not None:
            raise KeyRingError(f"signing key {self.kid} cannot be both active and retired")

    @property
    def retired(self) -> bool:
        """Whether the key has been retired and must no longer verify tokens."""
        return self.retired_at is not None

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        """The loaded private key."""
        return _load_private_key(self.private_key_pem)

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The public half of the key."""
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """Return the public JWK (kty, use, alg, kid, n, e) of this key."""
        return public_jwk(self.public_key, self.kid)


def generate_signing_key(
    created_at: datetime | None = None, *, active: bool = True, key_size: int = DEFAULT_KEY_SIZE
) -> SigningKey:
    """Generate a new RSA signing key; `created_at` defaults to the current UTC time."""
    if key_size < DEFAULT_KEY_SIZE:
        raise ValueError(f"RSA signing keys need at least {DEFAULT_KEY_SIZE} bits")
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")
    return SigningKey(
        kid=jwk_thumbprint(private_key.public_key()),
        private_key_pem=pem,
        created_at=created_at or datetime.now(UTC),
        active=active,
    )


class KeyRing:
    """The keys in force: the active one signs, every key that is not retired verifies."""

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        usable = [key for key in keys if not key.retired]
        active = [key for key in usable if key.active]
        if len(active) > 1:
            kids = ", ".join(key.kid for key in active)
            raise KeyRingError(f"only one signing key may be active; active: {kids}")
        self._active = active[0] if active else None
        self._by_kid: dict[str, SigningKey] = {}
        for key in usable:
            actual = jwk_thumbprint(key.public_key)
            if actual != key.kid:
                raise KeyRingError(f"signing key {key.kid} does not match its key material ({actual})")
            self._by_kid[key.kid] = key

    @property
    def signing_key(self) -> SigningKey:
        """The active key, used to sign new tokens."""
        if self._active is None:
            raise KeyRingError("there is no active signing key")
        return self._active

    @property
    def kids(self) -> tuple[str, ...]:
        """Key ids that verify tokens, the active one first."""
        return tuple(sorted(self._by_kid, key=lambda kid: not self._by_kid[kid].active))

    def verification_key(self, kid: str) -> rsa.RSAPublicKey | None:
        """Return the public key that verifies tokens signed under `kid`, or None if unknown or retired."""
        key = self._by_kid.get(kid)
        return key.public_key if key is not None else None

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Return the public JWKS document served at the discovery `jwks_uri`."""
        return {"keys": [self._by_kid[kid].public_jwk() for kid in self.kids]}


def rotate(keys: Sequence[SigningKey], now: datetime, *, key_size: int = DEFAULT_KEY_SIZE) -> list[SigningKey]:
    """Return the keys with a new active key; the previous one stays, inactive, to verify its tokens."""
    demoted = [replace(key, active=False) if key.active else key for key in keys]
    return [*demoted, generate_signing_key(now, active=True, key_size=key_size)]


def retire(keys: Sequence[SigningKey], kid: str, now: datetime) -> list[SigningKey]:
    """Return the keys with `kid` retired at `now`; the active key must be rotated out first."""
    _require_aware("now", now)
    found = False
    result: list[SigningKey] = []
    for key in keys:
        if key.kid == kid:
            found = True
            if key.active:
                raise KeyRingError(f"signing key {kid} is active; rotate before retiring it")
            if not key.retired:
                key = replace(key, retired_at=now)
        result.append(key)
    if not found:
        raise KeyRingError(f"no signing key with kid {kid}")
    return result


class KeyRingCache:
    """The current KeyRing of a key store, shared by every process that reads the same store.

    Call it to get the ring (it is a keyring provider for TokenIssuer and TokenVerifier). The keys
    are reloaded when older than `max_age_seconds`, on `reload()` (after this process rotated),
    and by `refresh_for(kid)` when a token names a key this process has not seen yet, because
    another process rotated; that reload happens at most once per `min_reload_interval_seconds`.
    """

    def __init__(
        self,
        load_keys: Callable[[], Iterable[SigningKey]],
        clock: Clock,
        *,
        max_age_seconds: float = 60.0,
        min_reload_interval_seconds: float = 5.0,
    ) -> None:
        self._load_keys = load_keys
        self._clock = clock
        self._max_age = max_age_seconds
        self._min_interval = min_reload_interval_seconds
        self._lock = threading.Lock()
        self._ring: KeyRing | None = None
        self._loaded_at: datetime | None = None

    def __call__(self) -> KeyRing:
        """Return the current ring, reloading it when it is older than the maximum age."""
        with self._lock:
            now = self._clock.now()
            if self._ring is None or self._age(now) >= self._max_age:
                return self._reload(now)
            return self._ring

    def reload(self) -> KeyRing:
        """Reload the keys now and return the new ring."""
        with self._lock:
            return self._reload(self._clock.now())

    def refresh_for(self, kid: str) -> KeyRing:
        """Return a ring that knows `kid` if the store has it, reloading at most once per interval."""
        with self._lock:
            now = self._clock.now()
            if self._ring is not None and (kid in self._ring or self._age(now) < self._min_interval):
                return self._ring
            return self._reload(now)

    def _age(self, now: datetime) -> float:
        if self._loaded_at is None:
            return float("inf")
        return (now - self._loaded_at).total_seconds()

    def _reload(self, now: datetime) -> KeyRing:
        self._ring = KeyRing(self._load_keys())
        self._loaded_at = now
        return self._ring


def load_signing_key_file(path: Path) -> SigningKey:
    """The token-signing key kept in a PEM file outside the database (``signing_key_file``).

    The file holds one unencrypted RSA private key (PKCS#8 or PKCS#1 PEM) of at least 2048 bits;
    its kid is the key's thumbprint. A file readable by others is used, with a warning.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logging.getLogger("bulwark.auth").warning(
            "signing key file %s is readable by others (mode %04o); chmod 600 it", path, mode
        )
    pem = path.read_text()
    private_key = _load_private_key(pem)
    if private_key.key_size < DEFAULT_KEY_SIZE:
        raise KeyRingError(f"{path}: RSA signing keys need at least {DEFAULT_KEY_SIZE} bits")
    created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return SigningKey(kid=jwk_thumbprint(private_key.public_key()), private_key_pem=pem, created_at=created, active=True)
