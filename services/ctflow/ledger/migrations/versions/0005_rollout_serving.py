"""rollouts: what serves the canary, the actions of the last decision not yet carried out, and commands

Revision ID: 0005_rollout_serving
Revises: 0004_rollouts
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_rollout_serving"
down_revision = "0004_rollouts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("serving", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("pending", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("command", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("superseded_by", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("superseded_by")
        batch.drop_column("command")
        batch.drop_column("pending")
        batch.drop_column("serving")
