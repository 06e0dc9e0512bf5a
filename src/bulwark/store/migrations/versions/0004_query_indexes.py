"""Indexes for list queries: folded DNS names, and actions by status in time order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _folded_dns() -> str:
    # Exactly the expression fold_case() compiles to on each engine, or the index goes unused.
    if op.get_bind().dialect.name == "postgresql":
        return 'lower(computer_dns_name COLLATE "C")'
    return "lower(computer_dns_name)"


def upgrade() -> None:
    op.execute(f"CREATE INDEX ix_machines_tenant_dns_folded ON machines (tenant_id, {_folded_dns()})")
    op.drop_index("ix_machine_actions_tenant_status", table_name="machine_actions")
    op.create_index("ix_machine_actions_tenant_status", "machine_actions", ["tenant_id", "status", "creation_date_time_utc"])


def downgrade() -> None:
    op.drop_index("ix_machine_actions_tenant_status", table_name="machine_actions")
    op.create_index("ix_machine_actions_tenant_status", "machine_actions", ["tenant_id", "status"])
    op.drop_index("ix_machines_tenant_dns_folded", table_name="machines")
