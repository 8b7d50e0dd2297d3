"""Provider attempts (fallback chains) and usage reported by providers, per record.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("attempts", sa.JSON, nullable=True))
        batch.add_column(sa.Column("usage", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_column("usage")
        batch.drop_column("attempts")
