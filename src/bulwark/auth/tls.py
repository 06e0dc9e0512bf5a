"""A local certificate authority and a server certificate for running Bulwark over HTTPS on one machine."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bulwark.clock import Clock, SystemClock

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"

DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1", "::1")
CA_LIFETIME = timedelta(days=3650)
# 397 days is the longest server certificate lifetime that browsers and Apple platforms accept.
SERVER_LIFETIME = timedelta(days=397)
# Certificates closer than this to their end are replaced rather than reused.
RENEW_BEFORE = timedelta(days=30)
# Backdating covers small clock differences between this host and its clients.
BACKDATE = timedelta(minutes=5)

_SAN = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files: the CA certificate clients trust, and the server's certificate and key."""

    ca_cert: Path
    cert: Path
    key: Path


def ensure_local_tls(
    directory: str | os.PathLike[str],
    hostnames: Iterable[str] = (),
    *,
    clock: Clock | None = None,
) -> TlsFiles:
    """Create (or reuse) a local CA and a server certificate for localhost and `hostnames`.

    The certificate always covers localhost, 127.0.0.1 and ::1; `hostnames` may add DNS names or
    IP addresses. Existing files are reused while they are valid for more than 30 days, belong
    together and cover every name; otherwise what is missing is issued again (a new CA only when
    the CA itself is unusable). Every file is written with mode 0600 (the data directory is
    private). Call it once at start-up, before starting worker processes.
    """
    now = (clock or SystemClock()).now()
    root = Path(directory)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = TlsFiles(ca_cert=root / CA_CERT_FILE, cert=root / SERVER_CERT_FILE, key=root / SERVER_KEY_FILE)
    ca_key_path = root / CA_KEY_FILE
    names = _subject_alt_names([*DEFAULT_HOSTNAMES, *hostnames])

    ca = _load_pair(files.ca_cert, ca_key_path)
    if ca is None or not _usable_ca(ca[0], now):
        ca = _issue_ca(now)
        _write(ca_key_path, _key_pem(ca[1]), 0o600)
        _write(files.ca_cert, ca[0].public_bytes(serialization.Encoding.PEM), 0o600)
    ca_cert, ca_key = ca

    server = _load_pair(files.cert, files.key)
    if server is None or not _usable_server_cert(server[0], ca_cert, names, now):
        cert, key = _issue_server_cert(ca_cert, ca_key, names, now)
        _write(files.key, _key_pem(key), 0o600)
        _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o600)

    for private in (ca_key_path, files.key):
        # A reused key file may have been loosened by hand or by a copy; keys stay owner-only.
        if private.stat().st_mode & 0o077:
            private.chmod(0o600)
    return files


def _subject_alt_names(hostnames: Iterable[str]) -> list[_SAN]:
    names: list[_SAN] = []
    for raw in hostnames:
        host = raw.strip().lower()
        if not host:
            continue
        try:
            entry: _SAN = x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in names:
            names.append(entry)
    return names


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.public_key() != key.public_key():
        return None
    return cert, key


def _valid_long_enough(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - now > RENEW_BEFORE


def _usable_ca(cert: x509.Certificate, now: datetime) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca and _valid_long_enough(cert, now)


def _usable_server_cert(cert: x509.Certificate, ca_cert: x509.Certificate, names: list[_SAN], now: datetime) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
        covered = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return _valid_long_enough(cert, now) and all(name in covered for name in names)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 is accepted by every current TLS client and is far quicker to create than RSA.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bulwark"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Bulwark local CA {secrets.token_hex(4)}"),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue_server_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: list[_SAN],
    now: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    public = key.public_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write(path: Path, data: bytes, mode: int) -> None:
    # Write beside the target and rename, so a reader never sees half a file and a key is never
    # readable by others, not even for a moment.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
