"""API keys (hashed, with scopes) and the key that made each record.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(36), nullable=True))
        batch.create_index("ix_records_api_key_id", ["api_key_id"])
    op.create_index("ix_record_outputs_sha256", "record_outputs", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_record_outputs_sha256", table_name="record_outputs")
    with op.batch_alter_table("records") as batch:
        batch.drop_index("ix_records_api_key_id")
        batch.drop_column("api_key_id")
    op.drop_index("ix_api_keys_prefix", table_name="api_keys")
    op.drop_table("api_keys")
