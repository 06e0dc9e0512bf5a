"""The token authority's signing keys: first key, rotation and retirement."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bulwark.auth.keys import SigningKey, generate_signing_key, load_signing_key_file
from bulwark.clock import Clock
from bulwark.service.identity.directory import IdentityError
from bulwark.service.ports import UnitOfWork, UnitOfWorkFactory


def ensure_signing_key(uow: UnitOfWork, clock: Clock) -> None:
    """Generate and store the first signing key if there is none; safe when several processes race."""
    with uow:
        if any(key.active for key in uow.signing_keys.list()):
            return
        uow.signing_keys.add_first(generate_signing_key(clock.now()))
        uow.commit()


ISSUER_BASE_URL = "issuer_base_url"


def settle_issuer_base_url(uow: UnitOfWork, configured: str | None, first: str) -> str:
    """The base of every tenant's token issuer (``{base}/{tenant}/v2.0``), recorded with the data.

    ``configured`` (BULWARK_PUBLIC_BASE_URL) is recorded and used when given; otherwise the one
    already recorded is kept, and a database that has none records ``first`` (the first server's
    own base URL). Every process and command then issues and verifies tokens for the same issuer,
    whatever port or host name it happened to be started with.
    """
    with uow:
        recorded = uow.signing_keys.setting(ISSUER_BASE_URL)
        if configured and configured != recorded:
            value = uow.signing_keys.record_setting(ISSUER_BASE_URL, configured, replace=True)
        elif recorded:
            return recorded
        else:
            value = uow.signing_keys.record_setting(ISSUER_BASE_URL, first, replace=False)
        uow.commit()
    return value


def recorded_issuer_base_url(uow: UnitOfWork) -> str | None:
    """The recorded issuer base, or None before any server has started."""
    with uow:
        return uow.signing_keys.setting(ISSUER_BASE_URL)


def load_signing_keys(uow: UnitOfWork) -> list[SigningKey]:
    """Every stored signing key."""
    with uow:
        return uow.signing_keys.list()


def signing_keys_loader(key_file: Path | None, uow_factory: UnitOfWorkFactory) -> Callable[[], list[SigningKey]]:
    """Where token-signing keys come from: ``key_file`` (``signing_key_file``) when set, else the database.

    A key file is read again whenever the key ring reloads (each minute), so replacing the file
    rotates the key; tokens signed by the previous key stop verifying then. It is read once here
    too, so that a missing or unusable file fails at start rather than at the first token.
    """
    if key_file is not None:
        load_signing_key_file(key_file)
        return lambda: [load_signing_key_file(key_file)]
    return lambda: load_signing_keys(uow_factory(write=False))


def rotate_signing_key(uow: UnitOfWork, clock: Clock) -> SigningKey:
    """Make a new key the signer; the previous one keeps verifying until it is retired."""
    key = generate_signing_key(clock.now())
    with uow:
        uow.signing_keys.replace_active(key)
        uow.commit()
    return key


def retire_signing_key(uow: UnitOfWork, clock: Clock, kid: str) -> None:
    """Stop a rotated-out key from verifying anything."""
    with uow:
        if not uow.signing_keys.retire(kid, clock.now()):
            raise IdentityError(f"no inactive, unretired signing key {kid} (rotate before retiring the active key)")
        uow.commit()
