"""Sensors: enrolled devices, their credentials, and the onboarding and offboarding packages."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bulwark.domain.errors import MdeError

ONBOARDING_PACKAGE_KIND = "bulwark-onboarding-package"
OFFBOARDING_PACKAGE_KIND = "bulwark-offboarding-package"
SENSOR_CREDENTIAL_PREFIX = "bws_"
# The one comment Bulwark writes when it closes actions of an earlier onboarding generation.
REONBOARD_CANCEL_REQUESTOR = "Bulwark"
REONBOARD_CANCEL_COMMENT = "The device was onboarded again; actions queued for its previous onboarding never run."


class InvalidPackage(MdeError):
    """An onboarding or offboarding package that is malformed, forged, for another tenant or expired."""

    code = "InvalidPackage"
    default_message = "The package is not valid."


@dataclass(frozen=True, slots=True)
class SensorIdentity:
    """An authenticated sensor: which enrolment (generation) of which machine is calling."""

    sensor_id: str
    tenant_id: str
    machine_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class DeviceProperties:
    """What a sensor reports about its device; None leaves the stored value as it is."""

    computer_dns_name: str | None = None
    os_platform: str | None = None
    version: str | None = None
    os_build: int | None = None
    agent_version: str | None = None
    ip_addresses: list[str] | None = None
    os_processor: str | None = None


def derive_machine_id(tenant_id: str, device_identity: str) -> str:
    """The machine id (40 hex digits) of a device: stable across offboard and re-onboard."""
    return hashlib.sha1(f"{tenant_id}/{device_identity}".encode()).hexdigest()


def new_secret(prefix: str = "") -> str:
    """A fresh 256-bit random secret, URL-safe."""
    return prefix + secrets.token_urlsafe(32)


def digest_credential(secret: str) -> str:
    """The stored form of a random credential (SHA-256 suffices for 256-bit random tokens).

    Not for passwords or client secrets: those are Argon2id-hashed (``bulwark.auth.secrets.hash_password``).
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_timestamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def new_signing_key() -> tuple[str, str]:
    """A new Ed25519 key pair for a tenant's offboarding packages: (private, public), base64."""
    private = Ed25519PrivateKey.generate()
    return (
        base64.b64encode(private.private_bytes_raw()).decode(),
        base64.b64encode(private.public_key().public_bytes_raw()).decode(),
    )


def build_onboarding_package(
    *,
    tenant_id: str,
    server_url: str,
    onboarding_key: str,
    signing_public_key: str,
    created_at: datetime,
    package_id: str | None = None,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """The onboarding package a device uses to enrol (its secret is shown only here)."""
    package = {
        "kind": ONBOARDING_PACKAGE_KIND,
        "tenantId": tenant_id,
        "serverUrl": server_url.rstrip("/"),
        "onboardingKey": onboarding_key,
        "packageSigningKey": signing_public_key,
        "createdAt": _timestamp(created_at),
    }
    if package_id is not None:
        package["packageId"] = package_id
    if expires_at is not None:
        package["expiresAt"] = _timestamp(expires_at)
    return package


def read_onboarding_package(package: Any) -> dict[str, Any]:
    """Validate the shape of an onboarding package and return it; raise InvalidPackage otherwise."""
    required = ("tenantId", "serverUrl", "onboardingKey", "packageSigningKey")
    if not isinstance(package, dict) or package.get("kind") != ONBOARDING_PACKAGE_KIND:
        raise InvalidPackage("This is not a Bulwark onboarding package.")
    if not all(isinstance(package.get(k), str) and package.get(k) for k in required):
        raise InvalidPackage("The onboarding package is incomplete.")
    return package


def build_offboarding_package(
    *, tenant_id: str, private_key: str, issued_at: datetime, expires_at: datetime, package_id: str
) -> dict[str, Any]:
    """An offboarding package: signed by the tenant's key, valid until ``expires_at``."""
    body = {
        "kind": OFFBOARDING_PACKAGE_KIND,
        "tenantId": tenant_id,
        "packageId": package_id,
        "issuedAt": _timestamp(issued_at),
        "expiresAt": _timestamp(expires_at),
    }
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_key))
    return {**body, "signature": base64.b64encode(key.sign(_canonical(body))).decode()}


def verify_offboarding_package(package: Any, *, tenant_id: str, public_key: str, now: datetime) -> None:
    """Accept an offboarding package only if it is signed for ``tenant_id`` and not yet expired.

    Raises InvalidPackage, saying why, otherwise; the device runs this with its own clock.
    """
    if not isinstance(package, dict) or package.get("kind") != OFFBOARDING_PACKAGE_KIND:
        raise InvalidPackage("This is not a Bulwark offboarding package.")
    body = {k: v for k, v in package.items() if k != "signature"}
    try:
        signature = base64.b64decode(package["signature"])
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key)).verify(signature, _canonical(body))
        expires_at = _parse_timestamp(package["expiresAt"])
    except (KeyError, TypeError, ValueError, InvalidSignature):
        raise InvalidPackage("The offboarding package's signature does not verify.") from None
    if package.get("tenantId") != tenant_id:
        raise InvalidPackage("The offboarding package is for another tenant.")
    if now >= expires_at:
        raise InvalidPackage(f"The offboarding package expired at {package['expiresAt']}.")
