"""Delivery is recorded: jobs.delivery (pending/delivered/undeliverable) and every message of a job

jobs.message_id (one message per job, overwritten by each new one) becomes the
job_messages table. Jobs finished before this revision count as delivered, so an
upgrade posts nothing old again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_messages",
        sa.Column("message_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("index", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"),
                  nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_messages_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_job_messages")),
    )
    op.create_index(op.f("ix_job_messages_job_id"), "job_messages", ["job_id"], unique=False)
    op.execute("INSERT INTO job_messages (message_id, job_id, channel_id, kind, via, user_id) "
               "SELECT message_id, id, channel_id, CASE WHEN state = 'done' THEN 'result' ELSE 'progress' END, "
               "'channel', user_id FROM jobs WHERE message_id IS NOT NULL AND channel_id IS NOT NULL")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("delivery", sa.String(length=16), nullable=False, server_default="pending"))
        batch.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("delivery_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("delivery_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("next_delivery_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_jobs_delivery"), ["delivery"], unique=False)
        batch.drop_column("message_id")
    op.execute("UPDATE jobs SET delivery = 'delivered', delivered_at = finished_at "
               "WHERE state IN ('done', 'failed', 'cancelled')")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("message_id", sa.BigInteger(), nullable=True))
        batch.drop_index(batch.f("ix_jobs_delivery"))
        batch.drop_column("next_delivery_at")
        batch.drop_column("delivery_error")
        batch.drop_column("delivery_attempts")
        batch.drop_column("delivered_at")
        batch.drop_column("delivery")
    # the newest message of each job is the one the old schema kept
    op.execute("UPDATE jobs SET message_id = (SELECT message_id FROM job_messages "
               "WHERE job_messages.job_id = jobs.id ORDER BY created_at DESC, message_id DESC LIMIT 1)")
    op.drop_index(op.f("ix_job_messages_job_id"), table_name="job_messages")
    op.drop_table("job_messages")
