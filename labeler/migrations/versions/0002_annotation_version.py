"""Annotation.version: a change to an existing annotation names the version it replaces, so a stale
request (a retry that arrives after a newer label) gets 409 and writes nothing. Existing annotations
start at version 1. Also bounds project.lease_seconds at 30 days, as labeler.schemas now does: a larger
value made every next-task request overflow the expiry datetime.

Revision ID: 0002_annotation_version
Revises: 0001
Create Date: 2026-11-30 22:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002_annotation_version'
down_revision = '0001'
branch_labels = None
depends_on = None

MAX_LEASE_SECONDS = 30 * 24 * 3600  # labeler.schemas.MAX_LEASE_SECONDS when this revision was written


def upgrade() -> None:
    with op.batch_alter_table('annotation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))
    project = sa.table('project', sa.column('lease_seconds', sa.Integer()))
    op.execute(project.update().where(project.c.lease_seconds > MAX_LEASE_SECONDS).values(lease_seconds=MAX_LEASE_SECONDS))


def downgrade() -> None:
    with op.batch_alter_table('annotation', schema=None) as batch_op:
        batch_op.drop_column('version')
