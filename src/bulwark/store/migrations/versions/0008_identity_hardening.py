"""Public clients and externally linked users.

Applications say whether they are public clients (may use the password grant without a secret);
users may be linked to an external provider's account by its issuer and immutable object id.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("public_client", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Applications without a secret (the console's sign-in client) could only ever be public.
    op.execute(sa.text("UPDATE applications SET public_client = :yes WHERE secret_hash IS NULL").bindparams(yes=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("external_issuer", sa.String(400), nullable=True))
        batch.add_column(sa.Column("external_object_id", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_users_external_identity", ["external_issuer", "external_object_id"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_external_identity", type_="unique")
        batch.drop_column("external_object_id")
        batch.drop_column("external_issuer")
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("public_client")
