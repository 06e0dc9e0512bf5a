"""The pytest plugin itself: registered by the package, and its server over HTTPS."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bulwark.testing import BulwarkServer

pytestmark = pytest.mark.slow


def test_the_plugin_is_registered_by_the_package(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("bulwark")
    assert plugin is not None and plugin.__name__ == "bulwark.testing.plugin"


def test_a_tls_server_for_msal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import msal

    server = BulwarkServer.start(tmp_path / "tls", tls=True, machine_count=5)
    try:
        assert server.url.startswith("https://")
        assert server.authority.startswith("https://")
        # The local CA is what makes it trusted: without it the handshake fails.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/healthz")
        assert server.control.clock()["offsetSeconds"] == 0
        with server.client() as client:
            assert len(list(client.list_machines())) == 5
        # MSAL takes the fixture's authority and CA as they are.
        assert server.ca_file is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        app = server.automation_app
        msal_app = msal.ConfidentialClientApplication(
            app["client_id"],
            client_credential=app["client_secret"],
            authority=server.authority,
            verify=server.ca_file,
            instance_discovery=False,
        )
        result = msal_app.acquire_token_for_client(scopes=["https://api.securitycenter.microsoft.com/.default"])
        assert "access_token" in result, result
        answer = httpx.get(
            f"{server.url}/_bulwark/clock",
            headers={"Authorization": f"Bearer {result['access_token']}"},
            verify=server.ssl_context(),
        )
        assert answer.status_code == 200
    finally:
        server.stop()
    assert server.process is not None and server.process.poll() is not None
