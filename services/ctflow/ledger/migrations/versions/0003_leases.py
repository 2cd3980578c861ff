"""one lease table for long work (job launch, evaluation, rollouts), replacing leases kept in run JSON

Revision ID: 0003_leases
Revises: 0002_delivery_failures
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_leases"
down_revision = "0002_delivery_failures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("leases")
