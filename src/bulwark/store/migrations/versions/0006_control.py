"""control plane of test servers: clock offset and reset epoch, behaviours, faults, request log

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "control_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("clock_offset_seconds", sa.Float(), nullable=False),
        sa.Column("reset_epoch", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_state")),
    )
    op.execute("INSERT INTO control_state (id, clock_offset_seconds, reset_epoch) VALUES (1, 0, 0)")
    op.create_table(
        "control_behaviors",
        sa.Column("machine_id", sa.String(length=40), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("delay_seconds", sa.Float(), nullable=False),
        sa.Column("error_h_result", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_control_behaviors_machine_id_machines"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("machine_id", name=op.f("pk_control_behaviors")),
    )
    op.create_table(
        "control_faults",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("operation", sa.String(length=100), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("retry_after_seconds", sa.Integer(), nullable=True),
        sa.Column("remaining", sa.Integer(), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_faults")),
    )
    op.create_table(
        "control_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=2048), nullable=False),
        sa.Column("operation", sa.String(length=100), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("caller", sa.JSON(), nullable=True),
        sa.Column("body", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_requests")),
    )
    op.create_index("ix_control_requests_operation", "control_requests", ["operation", "id"])


def downgrade() -> None:
    op.drop_index("ix_control_requests_operation", table_name="control_requests")
    op.drop_table("control_requests")
    op.drop_table("control_faults")
    op.drop_table("control_behaviors")
    op.drop_table("control_state")
