"""The real MSAL library against ``bulwark serve --tls --demo``: a token over HTTPS that offboards a machine."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jwt
import msal
import pytest

from tests.identity_support import bearer
from tests.support import server_process

pytestmark = pytest.mark.slow


def test_msal_acquires_tokens_from_bulwark_over_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    log = tmp_path / "server.log"
    with server_process("--demo", "--tls", "--data-dir", str(data), env={"BULWARK_DATABASE_URL": ""}, log=log) as base:
        assert base.startswith("https://")
        printed = log.read_text()
        creds = json.loads((data / "demo-credentials.json").read_text())
        ca = creds["ca_certificate"]
        assert ca and Path(ca).exists() and ca in printed, "the server says which CA to trust"
        assert creds["authority"] == f"{base}/{creds['tenant_id']}"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/healthz")  # not trusted without the CA
        full = next(a for a in creds["applications"] if "Machine.Offboard" in a["roles"])
        # requests (under MSAL) lets these variables override its ``verify``; trust Bulwark's CA the
        # way the server tells users to.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

        # MSAL refuses an authority that is not https; Bulwark's is.
        with pytest.raises(ValueError):
            msal.ConfidentialClientApplication(
                full["client_id"],
                client_credential=full["client_secret"],
                authority=creds["authority"].replace("https://", "http://"),
                instance_discovery=False,
            )
        app = msal.ConfidentialClientApplication(
            full["client_id"],
            client_credential=full["client_secret"],
            authority=creds["authority"],
            verify=ca,
            instance_discovery=False,
        )
        result = app.acquire_token_for_client(scopes=[creds["scope"]])
        assert "access_token" in result, result
        assert result["token_type"] == "Bearer"

        machine_id = printed.split("/api/machines/")[1].split("/offboard")[0]
        offboarded = httpx.post(
            f"{base}/api/machines/{machine_id}/offboard",
            json={"Comment": "Offboarded with an MSAL token"},
            headers=bearer(result["access_token"]),
            verify=ca,
        )
        assert offboarded.status_code == 200, offboarded.text
        assert offboarded.json()["requestor"] == full["name"]

        # A user signs in through the same authority (resource-owner password grant).
        analyst = next(u for u in creds["users"] if u["username"].startswith("analyst"))
        # MSAL's user-realm lookup drops the authority's port (it asks https://127.0.0.1:443); on a
        # server at port 443 Bulwark answers it, here MSAL is told to skip it for this host.
        msal.authority.Authority._domains_without_user_realm_discovery.add("127.0.0.1")
        public = msal.PublicClientApplication(
            full["client_id"], authority=creds["authority"], verify=ca, instance_discovery=False
        )
        signed_in = public.acquire_token_by_username_password(analyst["username"], analyst["password"], scopes=[creds["scope"]])
        assert "access_token" in signed_in, signed_in
        claims = jwt.decode(signed_in["access_token"], options={"verify_signature": False})
        assert claims["upn"] == analyst["username"] and "Machine.Offboard" in claims["scp"].split()
        action = httpx.get(
            f"{base}/api/machineactions/{offboarded.json()['id']}", headers=bearer(signed_in["access_token"]), verify=ca
        )
        assert action.status_code == 200
        assert action.json()["requestorComment"] == "Offboarded with an MSAL token"


def test_the_cli_trusts_the_ca_named_in_the_credentials_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bulwark.cli import app

    data = tmp_path / "data"
    with server_process("--demo", "--tls", "--data-dir", str(data), env={"BULWARK_DATABASE_URL": ""}):
        credentials = data / "demo-credentials.json"
        unset = {
            name: None
            for name in ("BULWARK_API_URL", "BULWARK_TOKEN", "BULWARK_CLIENT_ID", "BULWARK_CLIENT_SECRET", "BULWARK_CA_FILE")
        }
        env = {**unset, "BULWARK_CREDENTIALS_FILE": str(credentials), "BULWARK_CONFIG": str(tmp_path / "none.json")}
        trusted = CliRunner().invoke(app, ["machines", "list", "--top", "1", "--json"], env=env)
        assert trusted.exit_code == 0, trusted.output
        assert len(json.loads(trusted.stdout)) == 1

        # Without the CA: unreachable (exit 6) with a hint, not an authentication failure (exit 4).
        document = json.loads(credentials.read_text())
        document["ca_certificate"] = None
        bare = tmp_path / "no-ca.json"
        bare.write_text(json.dumps(document))
        untrusted = CliRunner().invoke(
            app, ["machines", "list", "--top", "1"], env={**env, "BULWARK_CREDENTIALS_FILE": str(bare)}
        )
        assert untrusted.exit_code == 6, untrusted.output
        assert "not trusted" in untrusted.stderr and "--ca-file" in untrusted.stderr
