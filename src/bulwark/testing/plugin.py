"""The pytest plugin: a real Bulwark server for a test session, reset before each test.

Installed with the package (entry point ``pytest11: bulwark``). Nothing starts unless a test asks
for the ``bulwark_server`` fixture, so loading the plugin costs a test run nothing.

Options (command line or ini): ``--bulwark-tls`` / ``bulwark_tls = true`` serves HTTPS with a
local CA (MSAL accepts only https authorities); ``bulwark_machine_count`` sizes the demo fleet.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from bulwark.testing import BulwarkServer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bulwark", "Bulwark test server")
    group.addoption("--bulwark-tls", action="store_true", default=None, help="Serve the bulwark_server fixture over HTTPS.")
    parser.addini("bulwark_tls", "Serve the bulwark_server fixture over HTTPS (true/false).", default="false")
    parser.addini("bulwark_machine_count", "Machines in the bulwark_server fixture's demo fleet.", default="20")


@pytest.fixture(scope="session")
def bulwark_server_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BulwarkServer]:
    """One Bulwark server for the whole session (not reset between tests: use ``bulwark_server``)."""
    from bulwark.testing import BulwarkServer

    config = request.config
    tls = config.getoption("--bulwark-tls") or str(config.getini("bulwark_tls")).lower() in {"1", "true", "yes"}
    count = int(str(config.getini("bulwark_machine_count")))
    server = BulwarkServer.start(tmp_path_factory.mktemp("bulwark-server"), tls=tls, machine_count=count)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bulwark_server(bulwark_server_session: BulwarkServer) -> BulwarkServer:
    """A real Bulwark server with its demo fleet, freshly reset for this test.

    ``url``, ``authority``, ``tenant_id``, ``applications``, ``users``, ``token()``, ``client()``
    and ``control`` (behaviours, faults, clock, reset, request log).
    """
    bulwark_server_session.control.reset()
    return bulwark_server_session
