"""merge the sensor tables (0002) into the main line (0004)

Revision ID: 0005
Revises: 0002, 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

revision = "0005"
down_revision = ("0002", "0004")
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both parents are independent (sensors; identity and query indexes): nothing to reconcile.
    pass


def downgrade() -> None:
    pass
