"""The control plane's tables: clock offset and reset epoch, behaviours, faults, the request log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from bulwark.domain.control import Behavior, ControlSnapshot, Fault, SimulatedOutcome
from bulwark.store.tables import (
    audit_events,
    control_behaviors,
    control_faults,
    control_requests,
    control_state,
    machine_actions,
    machine_tags,
    machines,
    sensors,
)

_STATE_ROW = control_state.c.id == 1


def _fault(row: Any) -> Fault:
    return Fault(
        id=row.id,
        operation=row.operation,
        status=row.status,
        latency_ms=row.latency_ms,
        retry_after_seconds=row.retry_after_seconds,
        remaining=row.remaining,
        probability=row.probability,
        created_at=row.created_at,
    )


class ControlRepository:
    """Reads and writes of the control plane, shared by every server process through the database."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- clock and epoch -----------------------------------------------------------------------

    def state(self) -> tuple[float, int]:
        """(clock offset in seconds, reset epoch)."""
        row = self.conn.execute(
            select(control_state.c.clock_offset_seconds, control_state.c.reset_epoch).where(_STATE_ROW)
        ).first()
        return (float(row[0]), int(row[1])) if row else (0.0, 0)

    def snapshot(self) -> ControlSnapshot:
        """The clock offset, reset epoch and active faults, as one request reads them."""
        offset, epoch = self.state()
        return ControlSnapshot(offset, epoch, tuple(self.list_faults()))

    def _ensure_state_row(self) -> None:
        # The migration creates the row; a database emptied table by table may have lost it.
        if self.conn.execute(select(control_state.c.id).where(_STATE_ROW)).first() is None:
            self.conn.execute(insert(control_state).values(id=1, clock_offset_seconds=0.0, reset_epoch=0))

    def advance_clock(self, seconds: float) -> float:
        """Move the offset forward by ``seconds``; return the new offset."""
        self._ensure_state_row()
        self.conn.execute(
            update(control_state).where(_STATE_ROW).values(clock_offset_seconds=control_state.c.clock_offset_seconds + seconds)
        )
        return self.state()[0]

    # -- behaviours ----------------------------------------------------------------------------

    def set_behavior(self, behavior: Behavior, now: datetime) -> None:
        """Replace the machine's behaviour."""
        self.conn.execute(delete(control_behaviors).where(control_behaviors.c.machine_id == behavior.machine_id))
        self.conn.execute(
            insert(control_behaviors).values(
                machine_id=behavior.machine_id,
                outcome=behavior.outcome.value,
                delay_seconds=behavior.delay_seconds,
                error_h_result=behavior.error_h_result,
                updated_at=now,
            )
        )

    def get_behavior(self, machine_id: str) -> Behavior | None:
        """The machine's behaviour, or None for the default."""
        row = self.conn.execute(select(control_behaviors).where(control_behaviors.c.machine_id == machine_id)).first()
        if row is None:
            return None
        return Behavior(row.machine_id, SimulatedOutcome(row.outcome), row.delay_seconds, row.error_h_result)

    def delete_behavior(self, machine_id: str) -> bool:
        """Restore the default; whether there was a behaviour."""
        return self.conn.execute(delete(control_behaviors).where(control_behaviors.c.machine_id == machine_id)).rowcount > 0

    # -- faults --------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Store a new fault."""
        self.conn.execute(
            insert(control_faults).values(
                id=fault.id,
                operation=fault.operation,
                status=fault.status,
                latency_ms=fault.latency_ms,
                retry_after_seconds=fault.retry_after_seconds,
                remaining=fault.remaining,
                probability=fault.probability,
                created_at=fault.created_at,
            )
        )

    def count_faults(self) -> int:
        """How many faults are stored."""
        return int(self.conn.execute(select(func.count()).select_from(control_faults)).scalar_one())

    def list_faults(self) -> list[Fault]:
        """Every active fault, oldest first."""
        stmt = select(control_faults).order_by(control_faults.c.created_at, control_faults.c.id)
        return [_fault(row) for row in self.conn.execute(stmt)]

    def delete_fault(self, fault_id: str) -> bool:
        """Remove a fault; whether it existed."""
        return self.conn.execute(delete(control_faults).where(control_faults.c.id == fault_id)).rowcount > 0

    def take_fault(self, fault_id: str) -> bool:
        """Spend one of a counted fault's calls; False when another call spent the last one first.

        A guarded decrement, so that however many processes race, a fault of ``count`` N faults
        exactly N calls. The fault goes once spent.
        """
        taken = self.conn.execute(
            update(control_faults)
            .where(control_faults.c.id == fault_id, control_faults.c.remaining > 0)
            .values(remaining=control_faults.c.remaining - 1)
        ).rowcount
        self.conn.execute(delete(control_faults).where(control_faults.c.id == fault_id, control_faults.c.remaining <= 0))
        return taken > 0

    # -- request log ---------------------------------------------------------------------------

    def record_request(self, *, keep: int, **values: Any) -> None:
        """Append one API call and drop the ones beyond the newest ``keep``."""
        new_id = self.conn.execute(insert(control_requests).values(**values)).inserted_primary_key[0]  # type: ignore[index]
        if new_id is not None and new_id > keep:
            self.conn.execute(delete(control_requests).where(control_requests.c.id <= new_id - keep))

    def list_requests(self, operation: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest recorded calls (of ``operation`` when given), newest first."""
        stmt = select(control_requests).order_by(control_requests.c.id.desc()).limit(limit)
        if operation:
            stmt = stmt.where(control_requests.c.operation == operation)
        return [dict(row) for row in self.conn.execute(stmt).mappings()]

    # -- reset ---------------------------------------------------------------------------------

    def wipe_fleet(self) -> int:
        """Delete every action, audit event, enrolment, machine and control setting; return the new epoch.

        Tenants, device groups, identities, keys and onboarding packages stay, so callers' tokens
        and the devices' onboarding packages keep working.
        """
        for table in (control_behaviors, control_faults, control_requests, machine_actions, sensors, machine_tags):
            self.conn.execute(delete(table))
        self.conn.execute(delete(audit_events))
        self.conn.execute(delete(machines))
        self._ensure_state_row()
        self.conn.execute(
            update(control_state).where(_STATE_ROW).values(clock_offset_seconds=0.0, reset_epoch=control_state.c.reset_epoch + 1)
        )
        return self.state()[1]
