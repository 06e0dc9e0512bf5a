"""Access tokens kept on disk between processes, as MSAL's token cache keeps them: one owner-only JSON file.

Consecutive ``bulwark`` commands (or scripts that ask for it) then make one token request an hour
rather than one per call. The file holds access tokens, which are secrets until they expire:

- it is written owner-only (0600) from the moment it exists, in a directory created 0700, and
  replaced atomically, so that a reader never sees half a file;
- a file that others may read or write, or that another user owns, is ignored, never trusted;
- entries are keyed by authority, tenant, client id and scope; the client secret is never
  stored, only a keyed hash of it (HMAC-SHA-256 with a random salt kept in the file), so that a
  changed secret never picks up a token that another secret obtained;
- an entry is used only until a margin before it expires, and is dropped when the API refuses
  its token (401).

Two processes writing at the same moment may lose one of their entries: the cost is one more
token request, never a wrong token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulwark.client.config import write_private_json

FORMAT_VERSION = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheKey:
    """What a token was issued for: never the secret itself."""

    authority: str
    tenant_id: str
    client_id: str
    scope: str

    def __str__(self) -> str:
        return json.dumps([self.authority.rstrip("/"), self.tenant_id, self.client_id, self.scope])


@dataclass(frozen=True)
class CachedToken:
    """An access token read from the cache, with when it was obtained and when it expires (epoch seconds)."""

    access_token: str
    cached_at: float
    expires_on: float = 0.0

    def refresh_on(self, margin: float) -> float:
        """When to stop using it: `margin` seconds before it expires, or half way for short-lived tokens."""
        lifetime = max(self.expires_on - self.cached_at, 0.0)
        return self.expires_on - min(margin, lifetime / 2)


class TokenCache:
    """A token cache file shared by every client (and process) that uses the same path."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock

    def __repr__(self) -> str:
        return f"TokenCache({str(self.path)!r})"

    def lookup(self, key: CacheKey, client_secret: str) -> CachedToken | None:
        """The token cached for `key`, if one was obtained with this same secret."""
        document = self._read()
        entry = document.get("tokens", {}).get(str(key))
        if not isinstance(entry, dict):
            return None
        expected = _secret_hash(document.get("salt"), client_secret)
        if expected is None or not hmac.compare_digest(str(entry.get("secret_hash", "")), expected):
            return None
        try:
            return CachedToken(str(entry["access_token"]), float(entry["cached_at"]), float(entry["expires_on"]))
        except (KeyError, TypeError, ValueError):
            return None

    def store(self, key: CacheKey, client_secret: str, access_token: str, *, expires_in: float) -> None:
        """Remember a token obtained now for `key` (with `client_secret`) that lasts `expires_in` seconds."""
        now = self.clock()

        def change(document: dict[str, Any]) -> None:
            salt = document.get("salt")
            if not isinstance(salt, str) or not salt:
                # A fresh file gets a fresh salt, and entries hashed with another salt go with it.
                salt = document["salt"] = secrets.token_hex(16)
                document["tokens"] = {}
            document["tokens"][str(key)] = {
                "access_token": access_token,
                "secret_hash": _secret_hash(salt, client_secret),
                "cached_at": now,
                "expires_on": now + max(expires_in, 0.0),
            }

        self._update(change)

    def forget(self, key: CacheKey, access_token: str) -> None:
        """Drop the entry for `key` if it still holds `access_token` (a newer token stays)."""

        def change(document: dict[str, Any]) -> None:
            entry = document["tokens"].get(str(key))
            if isinstance(entry, dict) and entry.get("access_token") == access_token:
                del document["tokens"][str(key)]

        self._update(change)

    def _update(self, change: Callable[[dict[str, Any]], None]) -> None:
        document = self._read()
        tokens = document.get("tokens")
        document["tokens"] = tokens if isinstance(tokens, dict) else {}
        document["version"] = FORMAT_VERSION
        before = json.dumps(document, sort_keys=True)
        change(document)
        now = self.clock()
        document["tokens"] = {
            name: entry
            for name, entry in document["tokens"].items()
            if isinstance(entry, dict) and isinstance(entry.get("expires_on"), int | float) and entry["expires_on"] > now
        }
        if json.dumps(document, sort_keys=True) == before:
            return
        try:
            write_private_json(self.path, document)
        except OSError as exc:
            # The cache only saves token requests: a command must not fail for want of it.
            log.debug("token cache %s not written: %s", self.path, exc)

    def _read(self) -> dict[str, Any]:
        try:
            descriptor = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return {}
        try:
            if not _private(os.fstat(descriptor)):
                log.warning("token cache %s ignored: it must be a file of your own, readable by you only (0600)", self.path)
                return {}
            with os.fdopen(descriptor, "rb") as handle:
                descriptor = -1
                document = json.loads(handle.read())
        except (OSError, ValueError):
            return {}
        finally:
            if descriptor != -1:
                os.close(descriptor)
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            return {}
        return document


def _private(status: os.stat_result) -> bool:
    import stat

    if not stat.S_ISREG(status.st_mode):
        return False
    # Windows has no owner ids or mode bits to check; the file lives in the user's own profile.
    return not hasattr(os, "getuid") or (status.st_uid == os.getuid() and not status.st_mode & 0o077)


def _secret_hash(salt: object, client_secret: str) -> str | None:
    if not isinstance(salt, str) or not salt:
        return None
    return hmac.new(salt.encode(), client_secret.encode(), hashlib.sha256).hexdigest()
