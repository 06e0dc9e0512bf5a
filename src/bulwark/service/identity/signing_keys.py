"""The token authority's signing keys: first key, rotation and retirement."""

from __future__ import annotations

from bulwark.auth.keys import SigningKey, generate_signing_key
from bulwark.clock import Clock
from bulwark.service.identity.directory import IdentityError
from bulwark.service.ports import UnitOfWork


def ensure_signing_key(uow: UnitOfWork, clock: Clock) -> None:
    """Generate and store the first signing key if there is none; safe when several processes race."""
    with uow:
        if any(key.active for key in uow.signing_keys.list()):
            return
        uow.signing_keys.add_first(generate_signing_key(clock.now()))
        uow.commit()


def load_signing_keys(uow: UnitOfWork) -> list[SigningKey]:
    """Every stored signing key."""
    with uow:
        return uow.signing_keys.list()


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
