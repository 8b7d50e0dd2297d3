"""Initial schema: blobs, records, record_outputs.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "records",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(255)),
        sa.Column("loras", sa.JSON),
        sa.Column("vae", sa.String(255)),
        sa.Column("scheduler", sa.String(64)),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("prompt_translated", sa.Text),
        sa.Column("prompt_expanded", sa.Text),
        sa.Column("prompt_used", sa.Text),
        sa.Column("negative_prompt", sa.Text),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("seeds", sa.JSON),
        sa.Column("timings", sa.JSON),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("client", sa.JSON),
        sa.Column("input_image_sha256", sa.String(64), sa.ForeignKey("blobs.sha256")),
        sa.Column("mask_sha256", sa.String(64), sa.ForeignKey("blobs.sha256")),
        sa.Column("mask_applied_sha256", sa.String(64), sa.ForeignKey("blobs.sha256")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_records_job_id", "records", ["job_id"], unique=True)
    op.create_index("ix_records_endpoint", "records", ["endpoint"])
    op.create_index("ix_records_status", "records", ["status"])
    op.create_index("ix_records_created_at", "records", ["created_at"])
    op.create_table(
        "record_outputs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_id", sa.String(36), sa.ForeignKey("records.id"), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
    )
    op.create_index("ix_record_outputs_record_id", "record_outputs", ["record_id"])


def downgrade() -> None:
    op.drop_table("record_outputs")
    op.drop_table("records")
    op.drop_table("blobs")
