"""Sign-in state kept in the database, so that every server process shares it: codes and console sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select, update

from bulwark.store.tables import authorization_codes, console_sessions


class AuthorizationCodeRepository:
    """Authorization codes, by the sha256 of the code; each can be redeemed once."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, **values: Any) -> None:
        """Store one code (its hash, client, redirect URI, PKCE challenge, user and expiry)."""
        self.conn.execute(insert(authorization_codes).values(**values))

    def redeem(self, code_hash: str, at: datetime) -> dict[str, Any] | None:
        """Mark the code redeemed and return it, or None if it is unknown or was redeemed already.

        A guarded update: of two concurrent redemptions of one code exactly one gets the row.
        """
        won = self.conn.execute(
            update(authorization_codes)
            .where(and_(authorization_codes.c.code_hash == code_hash, authorization_codes.c.redeemed_at.is_(None)))
            .values(redeemed_at=at)
        )
        if won.rowcount != 1:
            return None
        row = (
            self.conn.execute(select(authorization_codes).where(authorization_codes.c.code_hash == code_hash)).mappings().first()
        )
        return dict(row) if row else None

    def was_redeemed(self, code_hash: str) -> bool:
        """Whether this code exists and was redeemed before."""
        row = self.conn.execute(
            select(authorization_codes.c.redeemed_at).where(authorization_codes.c.code_hash == code_hash)
        ).first()
        return row is not None and row[0] is not None

    def purge_expired(self, before: datetime) -> int:
        """Forget codes that expired before ``before``."""
        return self.conn.execute(delete(authorization_codes).where(authorization_codes.c.expires_at < before)).rowcount


class ConsoleSessionRepository:
    """Console sessions, by the sha256 of the session id the browser holds."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, **values: Any) -> None:
        """Store one session."""
        self.conn.execute(insert(console_sessions).values(**values))

    def get(self, id_hash: str) -> dict[str, Any] | None:
        """One session by the hash of its id, expired or not."""
        row = self.conn.execute(select(console_sessions).where(console_sessions.c.id_hash == id_hash)).mappings().first()
        return dict(row) if row else None

    def delete(self, id_hash: str) -> bool:
        """End one session; return whether it existed."""
        return self.conn.execute(delete(console_sessions).where(console_sessions.c.id_hash == id_hash)).rowcount == 1

    def purge_expired(self, before: datetime) -> int:
        """Forget sessions that expired before ``before``."""
        return self.conn.execute(delete(console_sessions).where(console_sessions.c.expires_at < before)).rowcount
