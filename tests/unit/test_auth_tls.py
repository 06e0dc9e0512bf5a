"""The local CA and server certificate: real TLS handshakes against them, and reuse of the files."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from bulwark.auth.tls import TlsFiles, ensure_local_tls
from bulwark.clock import FrozenClock

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
GREETING = b"hello over tls"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    # The real clock here: the handshake checks validity against the machine's time.
    return ensure_local_tls(tmp_path / "tls", ["bulwark.internal", "10.1.2.3"])


@pytest.fixture
def tls_server(tls: TlsFiles) -> Iterator[tuple[str, int]]:
    """A TLS server on 127.0.0.1 (and ::1 when available) that greets every client that completes a handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                try:
                    with context.wrap_socket(connection, server_side=True) as secure:
                        secure.sendall(GREETING)
                except (ssl.SSLError, OSError):
                    pass  # the client refused our certificate; that is what some tests expect

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def greeting_from(address: tuple[str, int], server_hostname: str, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(address, timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as secure:
            return secure.recv(len(GREETING))


def trusting_only(ca_cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_cert)
    # Strict RFC 5280 checks, as newer Pythons apply by default, so the certificates pass there too.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "bulwark.internal"])
def test_server_certificate_verifies_against_the_local_ca(tls: TlsFiles, tls_server: tuple[str, int], hostname: str) -> None:
    assert greeting_from(tls_server, hostname, trusting_only(tls.ca_cert)) == GREETING


def test_certificate_is_refused_for_a_name_it_does_not_cover(tls: TlsFiles, tls_server: tuple[str, int]) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        greeting_from(tls_server, "intranet.example", trusting_only(tls.ca_cert))


def test_certificate_is_refused_without_the_local_ca(tls_server: tuple[str, int]) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        greeting_from(tls_server, "localhost", ssl.create_default_context())


def test_ipv6_loopback_is_covered(tls: TlsFiles) -> None:
    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as error:
        pytest.skip(f"cannot listen on ::1: {error}")
    received: list[bytes] = []

    def serve_once() -> None:
        connection, _ = listener.accept()
        with connection, context.wrap_socket(connection, server_side=True) as secure:
            secure.sendall(GREETING)

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    with listener:
        received.append(greeting_from(listener.getsockname()[:2], "::1", trusting_only(tls.ca_cert)))
        thread.join(timeout=5)
    assert received == [GREETING]


def test_ca_is_a_certificate_authority_and_the_server_certificate_is_not(tls: TlsFiles) -> None:
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "bulwark.internal"}
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "::1",
        "10.1.2.3",
    }


def test_private_keys_are_readable_by_the_owner_only(tls: TlsFiles) -> None:
    for key in (tls.key, tls.ca_cert.with_name("ca-key.pem")):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in tls.ca_cert.read_text()
    assert "PRIVATE KEY" not in tls.cert.read_text()


def test_valid_files_are_reused(tmp_path: Path, clock: FrozenClock) -> None:
    first = ensure_local_tls(tmp_path, ["bulwark.internal"], clock=clock)
    contents = {path: path.read_bytes() for path in (first.ca_cert, first.cert, first.key)}
    clock.advance(timedelta(days=300).total_seconds())
    second = ensure_local_tls(tmp_path, ["bulwark.internal"], clock=clock)
    assert second == first
    assert {path: path.read_bytes() for path in contents} == contents


def test_a_new_hostname_reissues_the_server_certificate_under_the_same_ca(tmp_path: Path, clock: FrozenClock) -> None:
    first = ensure_local_tls(tmp_path, [], clock=clock)
    ca_before, cert_before = first.ca_cert.read_bytes(), first.cert.read_bytes()
    ensure_local_tls(tmp_path, ["new.internal"], clock=clock)
    assert first.ca_cert.read_bytes() == ca_before
    assert first.cert.read_bytes() != cert_before
    server = x509.load_pem_x509_certificate(first.cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "new.internal" in names.get_values_for_type(x509.DNSName)


def test_a_server_certificate_near_its_end_is_replaced(tmp_path: Path, clock: FrozenClock) -> None:
    first = ensure_local_tls(tmp_path, [], clock=clock)
    ca_before, cert_before = first.ca_cert.read_bytes(), first.cert.read_bytes()
    clock.advance(timedelta(days=380).total_seconds())
    ensure_local_tls(tmp_path, [], clock=clock)
    assert first.ca_cert.read_bytes() == ca_before
    server = x509.load_pem_x509_certificate(first.cert.read_bytes())
    assert first.cert.read_bytes() != cert_before
    assert server.not_valid_after_utc > clock.now() + timedelta(days=300)


def test_an_expiring_ca_is_replaced_with_its_server_certificate(tmp_path: Path, clock: FrozenClock) -> None:
    first = ensure_local_tls(tmp_path, [], clock=clock)
    ca_before, cert_before = first.ca_cert.read_bytes(), first.cert.read_bytes()
    clock.advance(timedelta(days=3640).total_seconds())
    ensure_local_tls(tmp_path, [], clock=clock)
    assert first.ca_cert.read_bytes() != ca_before
    assert first.cert.read_bytes() != cert_before
    ca = x509.load_pem_x509_certificate(first.ca_cert.read_bytes())
    x509.load_pem_x509_certificate(first.cert.read_bytes()).verify_directly_issued_by(ca)


def test_a_damaged_key_file_is_replaced(tmp_path: Path, clock: FrozenClock) -> None:
    first = ensure_local_tls(tmp_path, [], clock=clock)
    first.key.write_text("not a key")
    ensure_local_tls(tmp_path, [], clock=clock)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(first.cert, first.key)  # raises if key and certificate do not belong together


def test_loosened_key_permissions_are_tightened_on_reuse(tmp_path: Path, clock: FrozenClock) -> None:
    first = ensure_local_tls(tmp_path, [], clock=clock)
    first.key.chmod(0o644)
    ensure_local_tls(tmp_path, [], clock=clock)
    assert stat.S_IMODE(first.key.stat().st_mode) == 0o600
