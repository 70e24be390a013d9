"""User.session_version: a browser session remembers the version its user was at when it logged in, and
ends when the version moves on (a password reset, a deactivation). Existing users start at 1; sessions
made before this revision carry no version and end at their next request (one log-in again per user).

Revision ID: 0006_user_session_version
Revises: 0005_task_queue
Create Date: 2026-12-01 01:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006_user_session_version'
down_revision = '0005_task_queue'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='1', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('session_version')
