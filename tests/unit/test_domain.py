"""The domain rules, without I/O: platforms, ids, the lifecycle, wire timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bulwark.api.wire import format_timestamp
from bulwark.domain.access import Permission, Principal, PrincipalKind, require_any
from bulwark.domain.actions import ActionStatus, allowed_from, can_transition, normalize_action_id, transition_sources
from bulwark.domain.errors import ClientVersionNotSupported, Forbidden, InvalidInput, OsPlatformNotSupported
from bulwark.domain.machines import ensure_offboard_supported, normalize_machine_id
from tests.conftest import make_machine


@pytest.mark.parametrize(
    ("platform", "build", "agent"),
    [
        ("Windows11", 22631, None),
        ("Windows10", 15063, None),
        ("Windows10", 19045, None),
        ("WindowsServer2019", 17763, None),
        ("WindowsServer2022", 20348, None),
        ("WindowsServer2016", 14393, "10.8760.14393.1000"),
        ("WindowsServer2012R2", 9600, "10.8000.9600.1"),
    ],
)
def test_supported_platforms_may_be_offboarded(platform: str, build: int, agent: str | None) -> None:
    ensure_offboard_supported(make_machine(1, os_platform=platform, os_build=build, agent_version=agent))


@pytest.mark.parametrize("platform", ["macOS", "Linux", "iOS", "Windows7"])
def test_unsupported_platforms_are_refused(platform: str) -> None:
    with pytest.raises(OsPlatformNotSupported) as caught:
        ensure_offboard_supported(make_machine(1, os_platform=platform, os_build=None))
    assert caught.value.message == f"OS Platform {platform} isn't supported for this action."


@pytest.mark.parametrize(
    ("platform", "build", "agent"),
    [
        ("Windows10", 15062, None),
        ("Windows10", 14393, None),
        ("WindowsServer2016", 14393, "10.3720.14393.1000"),
        ("WindowsServer2012R2", 9600, None),
        ("WindowsServer2012R2", 9600, "garbage"),
    ],
)
def test_old_clients_are_refused_with_client_version(platform: str, build: int, agent: str | None) -> None:
    with pytest.raises(ClientVersionNotSupported) as caught:
        ensure_offboard_supported(make_machine(1, os_platform=platform, os_build=build, agent_version=agent))
    assert caught.value.message.startswith("Offboard is supported on client version")


def test_machine_ids_are_40_alphanumerics_matched_case_insensitively() -> None:
    assert normalize_machine_id("1E5BC9D7E413DDD7902C2932E418702B84D0CC07") == "1e5bc9d7e413ddd7902c2932e418702b84d0cc07"
    for bad in [
        "",
        "abc",
        "1e5bc9d7e413ddd7902c2932e418702b84d0cc0",
        "1e5bc9d7e413ddd7902c2932e418702b84d0cc07a",
        "1e5bc9d7e413ddd7902c2932e418702b84d0cc0!",
        "' or 1=1 --xxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ]:
        with pytest.raises(InvalidInput):
            normalize_machine_id(bad)


def test_action_ids_are_guids() -> None:
    assert normalize_action_id("F123CB8D-1CEE-4DA9-8CD1-74B4D14F5DC2") == "f123cb8d-1cee-4da9-8cd1-74b4d14f5dc2"
    with pytest.raises(InvalidInput):
        normalize_action_id("not-a-guid")


def test_lifecycle_table() -> None:
    assert can_transition(ActionStatus.PENDING, ActionStatus.IN_PROGRESS)
    assert can_transition(ActionStatus.PENDING, ActionStatus.CANCELLED)
    assert can_transition(ActionStatus.IN_PROGRESS, ActionStatus.SUCCEEDED)
    assert not can_transition(ActionStatus.IN_PROGRESS, ActionStatus.CANCELLED)
    for final in (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.TIMEOUT, ActionStatus.CANCELLED):
        assert final.is_final
        assert not any(can_transition(final, target) for target in ActionStatus)
    assert allowed_from(ActionStatus.TIMEOUT) == {ActionStatus.PENDING, ActionStatus.IN_PROGRESS}


def test_allowed_from_is_the_table_read_backwards() -> None:
    for target in ActionStatus:
        assert allowed_from(target) == {s for s in ActionStatus if can_transition(s, target)}
    assert allowed_from(ActionStatus.CANCELLED) == {ActionStatus.PENDING}
    assert allowed_from(ActionStatus.SUCCEEDED) == allowed_from(ActionStatus.FAILED) == {ActionStatus.IN_PROGRESS}
    assert allowed_from(ActionStatus.PENDING) == frozenset()


def test_a_guard_may_narrow_the_table_but_never_widen_it() -> None:
    assert transition_sources(ActionStatus.TIMEOUT) == {ActionStatus.PENDING, ActionStatus.IN_PROGRESS}
    assert transition_sources(ActionStatus.TIMEOUT, ActionStatus.IN_PROGRESS) == {ActionStatus.IN_PROGRESS}
    with pytest.raises(ValueError, match="InProgress -> Cancelled"):
        transition_sources(ActionStatus.CANCELLED, ActionStatus.IN_PROGRESS)
    with pytest.raises(ValueError, match="no move to Pending"):
        transition_sources(ActionStatus.PENDING)


@pytest.mark.parametrize(
    ("micro", "expected"),
    [(722023, "2021-01-26T20:33:57.722023Z"), (200000, "2021-01-26T20:33:57.2Z"), (0, "2021-01-26T20:33:57Z")],
)
def test_timestamps_drop_trailing_zeros(micro: int, expected: str) -> None:
    assert format_timestamp(datetime(2021, 1, 26, 20, 33, 57, micro, tzinfo=UTC)) == expected


def test_timestamps_are_written_in_utc_whatever_their_zone() -> None:
    east = timezone(timedelta(hours=5, minutes=30))
    assert format_timestamp(datetime(2021, 1, 27, 2, 3, 57, 200000, tzinfo=east)) == "2021-01-26T20:33:57.2Z"


def test_missing_permission_is_worded_like_the_live_service() -> None:
    app = Principal("t", PrincipalKind.APPLICATION, "a", "app", permissions=frozenset({"Machine.Read.All"}))
    with pytest.raises(Forbidden) as caught:
        require_any(app, {Permission.MACHINE_OFFBOARD})
    assert caught.value.message == (
        "Missing application roles. API required roles: Machine.Offboard, application roles: Machine.Read.All."
    )
