"""failed handling attempts per event, so a poison event becomes a dead letter

Revision ID: 0002_delivery_failures
Revises: 0001_initial
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_delivery_failures"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_failures",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "source", "event_id"),
    )


def downgrade() -> None:
    op.drop_table("delivery_failures")
