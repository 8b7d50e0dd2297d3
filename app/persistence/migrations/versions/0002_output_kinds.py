"""Record outputs of several kinds: images, sequence frames (with their own prompt and
strength) and packages (zip, GIF, MP4 …, which have no seed or size).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("record_outputs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False,
                                   server_default="image"))
        batch.add_column(sa.Column("name", sa.String(128), nullable=True))
        batch.add_column(sa.Column("prompt", sa.Text, nullable=True))
        batch.add_column(sa.Column("strength", sa.Float, nullable=True))
        batch.add_column(sa.Column("content_type", sa.String(100), nullable=True))
        batch.alter_column("seed", existing_type=sa.BigInteger, nullable=True)
        batch.alter_column("width", existing_type=sa.Integer, nullable=True)
        batch.alter_column("height", existing_type=sa.Integer, nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("record_outputs") as batch:
        batch.drop_column("content_type")
        batch.drop_column("strength")
        batch.drop_column("prompt")
        batch.drop_column("name")
        batch.drop_column("kind")
