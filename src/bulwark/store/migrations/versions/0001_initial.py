"""initial schema: tenants, device groups, machines, actions, audit

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=True),
        sa.Column("actor_kind", sa.String(length=16), nullable=True),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("actor_name", sa.String(length=320), nullable=True),
        sa.Column("action", sa.String(length=80), nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=True),
        sa.Column("machine_action_id", sa.String(length=36), nullable=True),
        sa.Column("outcome_status", sa.Integer(), nullable=False),
        sa.Column("outcome_code", sa.String(length=64), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_tenant_time", ["tenant_id", "occurred_at"], unique=False)

    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "device_groups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_device_groups_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_groups")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_device_groups_tenant_name"),
    )
    op.create_table(
        "machines",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("computer_dns_name", sa.String(length=255), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("os_platform", sa.String(length=64), nullable=False),
        sa.Column("os_processor", sa.String(length=32), nullable=True),
        sa.Column("version", sa.String(length=32), nullable=True),
        sa.Column("os_build", sa.BigInteger(), nullable=True),
        sa.Column("last_ip_address", sa.String(length=64), nullable=True),
        sa.Column("last_external_ip_address", sa.String(length=64), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("health_status", sa.String(length=64), nullable=False),
        sa.Column("device_value", sa.String(length=16), nullable=False),
        sa.Column("rbac_group_id", sa.Integer(), nullable=True),
        sa.Column("risk_score", sa.String(length=16), nullable=False),
        sa.Column("exposure_level", sa.String(length=16), nullable=False),
        sa.Column("is_aad_joined", sa.Boolean(), nullable=False),
        sa.Column("aad_device_id", sa.String(length=36), nullable=True),
        sa.Column("onboarding_status", sa.String(length=32), nullable=False),
        sa.Column("os_architecture", sa.String(length=16), nullable=True),
        sa.Column("ip_addresses", sa.JSON(), nullable=False),
        sa.Column("managed_by", sa.String(length=64), nullable=True),
        sa.Column("managed_by_status", sa.String(length=64), nullable=True),
        sa.Column("is_potential_duplication", sa.Boolean(), nullable=False),
        sa.Column("is_excluded", sa.Boolean(), nullable=False),
        sa.Column("offboarded_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rbac_group_id"], ["device_groups.id"], name=op.f("fk_machines_rbac_group_id_device_groups"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_machines_tenant_id_tenants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machines")),
    )
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.create_index("ix_machines_tenant_dns", ["tenant_id", "computer_dns_name"], unique=False)
        batch_op.create_index("ix_machines_tenant_group", ["tenant_id", "rbac_group_id"], unique=False)
        batch_op.create_index("ix_machines_tenant_health", ["tenant_id", "health_status"], unique=False)
        batch_op.create_index("ix_machines_tenant_last_seen", ["tenant_id", "last_seen"], unique=False)
        batch_op.create_index("ix_machines_tenant_platform", ["tenant_id", "os_platform"], unique=False)

    op.create_table(
        "machine_actions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("machine_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("title", sa.String(length=400), nullable=True),
        sa.Column("requestor", sa.String(length=320), nullable=False),
        sa.Column("requestor_id", sa.String(length=64), nullable=True),
        sa.Column("requestor_comment", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("computer_dns_name", sa.String(length=255), nullable=True),
        sa.Column("creation_date_time_utc", sa.DateTime(), nullable=False),
        sa.Column("last_update_date_time_utc", sa.DateTime(), nullable=False),
        sa.Column("cancellation_requestor", sa.String(length=320), nullable=True),
        sa.Column("cancellation_comment", sa.Text(), nullable=True),
        sa.Column("cancellation_date_time_utc", sa.DateTime(), nullable=True),
        sa.Column("error_h_result", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("scope", sa.String(length=40), nullable=True),
        sa.Column("external_id", sa.String(length=400), nullable=True),
        sa.Column("request_source", sa.String(length=40), nullable=False),
        sa.Column("related_file_info", sa.JSON(), nullable=True),
        sa.Column("commands", sa.JSON(), nullable=False),
        sa.Column("troubleshoot_info", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_machine_actions_machine_id_machines"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_machine_actions_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_actions")),
    )
    with op.batch_alter_table("machine_actions", schema=None) as batch_op:
        batch_op.create_index("ix_machine_actions_machine_created", ["machine_id", "creation_date_time_utc"], unique=False)
        batch_op.create_index("ix_machine_actions_tenant_created", ["tenant_id", "creation_date_time_utc", "id"], unique=False)
        batch_op.create_index("ix_machine_actions_tenant_status", ["tenant_id", "status"], unique=False)
        batch_op.create_index(
            "uq_machine_actions_one_active",
            ["machine_id", "type"],
            unique=True,
            sqlite_where=sa.text("status IN ('Pending', 'InProgress')"),
            postgresql_where=sa.text("status IN ('Pending', 'InProgress')"),
        )

    op.create_table(
        "machine_tags",
        sa.Column("machine_id", sa.String(length=40), nullable=False),
        sa.Column("tag", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_machine_tags_machine_id_machines"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("machine_id", "tag", name=op.f("pk_machine_tags")),
    )
    with op.batch_alter_table("machine_tags", schema=None) as batch_op:
        batch_op.create_index("ix_machine_tags_tag", ["tag"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("machine_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_machine_tags_tag")

    op.drop_table("machine_tags")
    with op.batch_alter_table("machine_actions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_machine_actions_one_active",
            sqlite_where=sa.text("status IN ('Pending', 'InProgress')"),
            postgresql_where=sa.text("status IN ('Pending', 'InProgress')"),
        )
        batch_op.drop_index("ix_machine_actions_tenant_status")
        batch_op.drop_index("ix_machine_actions_tenant_created")
        batch_op.drop_index("ix_machine_actions_machine_created")

    op.drop_table("machine_actions")
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_index("ix_machines_tenant_platform")
        batch_op.drop_index("ix_machines_tenant_last_seen")
        batch_op.drop_index("ix_machines_tenant_health")
        batch_op.drop_index("ix_machines_tenant_group")
        batch_op.drop_index("ix_machines_tenant_dns")

    op.drop_table("machines")
    op.drop_table("device_groups")
    op.drop_table("tenants")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_tenant_time")

    op.drop_table("audit_events")
