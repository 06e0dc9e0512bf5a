"""Onboarding packages expire and may allow replacing sensors; sensors keep a re-onboarding proof.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("onboarding_packages") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("replaces_sensors", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("sensors") as batch:
        batch.add_column(sa.Column("proof_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sensors") as batch:
        batch.drop_column("proof_hash")
    with op.batch_alter_table("onboarding_packages") as batch:
        batch.drop_column("replaces_sensors")
        batch.drop_column("expires_at")
