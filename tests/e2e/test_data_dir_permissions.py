"""The data directory and every file in it are private to the account running Bulwark."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.auth.keys import jwk_thumbprint
from bulwark.clock import FrozenClock
from bulwark.settings import Settings
from bulwark.store.db import upgrade_database
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import TENANT
from tests.identity_support import ALL_APP_ROLES, app_token, bearer, register_app
from tests.support import child_env, server_process

pytestmark = pytest.mark.slow


def modes(root: Path) -> dict[str, str]:
    found = {".": f"{stat.S_IMODE(root.stat().st_mode):04o}"}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = f"{stat.S_IMODE(path.stat().st_mode):04o}"
    return found


def test_a_new_data_directory_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"BULWARK_DATA_DIR": str(data), "BULWARK_DEFAULT_TENANT_ID": TENANT}
    old = os.umask(0o022)
    try:
        with server_process("--tls", env=env, log=tmp_path / "server.log") as base:
            with httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=str(data / "tls" / "ca.pem"))) as client:
                assert client.get("/healthz").status_code == 200
            found = modes(data)
    finally:
        os.umask(old)
    assert {"bulwark.db", "bulwark.db-wal", "bulwark.db-shm", "tls"} <= set(found)
    assert any(name.startswith("tls/") and name.endswith(".pem") for name in found)
    for name, mode in found.items():
        expected = "0700" if (data / name).is_dir() else "0600"
        assert mode == expected, (name, mode)


def test_a_loose_data_directory_is_tightened_at_start_with_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        # A database and credentials left readable by everyone, as earlier versions wrote them.
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from bulwark.store.db import upgrade_database; upgrade_database('sqlite:///{data}/bulwark.db')",
            ],
            env=child_env(),
            check=True,
        )
    finally:
        os.umask(old)
    (data / "bulwark.db").chmod(0o644)
    (data / "demo-credentials.json").write_text("{}")
    (data / "demo-credentials.json").chmod(0o644)
    (data / "tls").mkdir(mode=0o755)
    (data / "tls" / "ca-key.pem").write_text("not really a key")
    (data / "tls" / "ca-key.pem").chmod(0o640)
    data.chmod(0o755)
    log = tmp_path / "server.log"
    env = {"BULWARK_DATA_DIR": str(data), "BULWARK_DEFAULT_TENANT_ID": TENANT}
    with server_process(env=env, log=log):
        found = modes(data)
    assert found["."] == "0700"
    assert found["tls"] == "0700"
    assert found["bulwark.db"] == found["demo-credentials.json"] == found["tls/ca-key.pem"] == "0600"
    assert all(mode in ("0600", "0700") for mode in found.values()), found
    text = log.read_text()
    assert "data directory permissions were too open" in text
    assert f"{data / 'bulwark.db'} was 0644, now 0600" in text
    assert f"{data} was 0755, now 0700" in text


def test_tokens_are_signed_with_a_key_file_kept_outside_the_database(
    database_url: str, uow_factory: UnitOfWorkFactory, clock: FrozenClock, tmp_path: Path
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "signing-key.pem"
    key_file.write_bytes(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        default_tenant_id=TENANT,
        signing_key_file=key_file,
        allowed_hosts=["testserver"],
    )
    with TestClient(create_app(settings, clock=clock)) as client:
        headers = bearer(app_token(client, register_app(uow_factory, ALL_APP_ROLES)))
        assert client.get("/api/machines", headers=headers).status_code == 200
        assert [k["kid"] for k in client.get(f"/{TENANT}/discovery/v2.0/keys").json()["keys"]] == [
            jwk_thumbprint(private.public_key())
        ]
    with uow_factory(write=False) as uow:
        assert uow.signing_keys.list() == []


def test_upgrade_creates_the_sqlite_file_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        upgrade_database(f"sqlite:///{tmp_path / 'new' / 'bulwark.db'}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "bulwark.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
