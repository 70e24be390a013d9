"""Project.kind: "ranking" (rank K responses) or "arena" (blind A/B votes between checkpoints).

Revision ID: 0003_project_kind
Revises: 0002_annotation_version
Create Date: 2026-11-30 22:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003_project_kind'
down_revision = '0002_annotation_version'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('project') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='ranking'))


def downgrade() -> None:
    with op.batch_alter_table('project') as batch:
        batch.drop_column('kind')
