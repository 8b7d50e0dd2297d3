"""Feedback on records: a rating, flags, a comment, when and by which key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("feedback_rating", sa.Integer, nullable=True))
        batch.add_column(sa.Column("feedback_flags", sa.JSON, nullable=True))
        batch.add_column(sa.Column("feedback_comment", sa.Text, nullable=True))
        batch.add_column(sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("feedback_key_id", sa.String(16), nullable=True))
        batch.create_index("ix_records_feedback_rating", ["feedback_rating"])


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_index("ix_records_feedback_rating")
        batch.drop_column("feedback_key_id")
        batch.drop_column("feedback_at")
        batch.drop_column("feedback_comment")
        batch.drop_column("feedback_flags")
        batch.drop_column("feedback_rating")
