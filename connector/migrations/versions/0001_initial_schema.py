"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 00:40:45.141351
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('corrections',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('system', sa.String(length=100), nullable=False),
    sa.Column('ticket_id', sa.String(length=100), nullable=False),
    sa.Column('field', sa.String(length=100), nullable=False),
    sa.Column('predicted', sa.Text(), nullable=True),
    sa.Column('final', sa.Text(), nullable=True),
    sa.Column('detected_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('system', 'ticket_id', 'field', name='uq_corrections_system_ticket_field')
    )
    op.create_table('datasets',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('label_counts', sa.JSON(), nullable=False),
    sa.Column('fingerprint', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('decisions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('system', sa.String(length=100), nullable=False),
    sa.Column('ticket_id', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('mode', sa.String(length=20), nullable=False),
    sa.Column('claimed_by', sa.String(length=200), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('model_version', sa.String(length=200), nullable=True),
    sa.Column('predictions', sa.JSON(), nullable=False),
    sa.Column('original', sa.JSON(), nullable=False),
    sa.Column('planned', sa.JSON(), nullable=False),
    sa.Column('applied', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('system', 'ticket_id', name='uq_decisions_system_ticket')
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index('ix_decisions_status', ['status'], unique=False)
        batch_op.create_index('ix_decisions_system_decided', ['system', 'decided_at'], unique=False)

    op.create_table('model_activations',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('field', sa.String(length=100), nullable=False),
    sa.Column('version', sa.String(length=200), nullable=False),
    sa.Column('previous_version', sa.String(length=200), nullable=True),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('field', sa.String(length=100), nullable=False),
    sa.Column('version', sa.String(length=200), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('base_model', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('data_fingerprint', sa.String(length=128), nullable=True),
    sa.Column('training', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('field', 'version', name='uq_model_versions_field_version')
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index('ix_model_versions_field_active', ['field', 'active'], unique=False)

    op.create_table('poll_state',
    sa.Column('system', sa.String(length=100), nullable=False),
    sa.Column('cursor', sa.Text(), nullable=True),
    sa.Column('last_poll_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_error_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('export_cursor', sa.Text(), nullable=True),
    sa.Column('export_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_export_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('system')
    )
    op.create_table('training_examples',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('system', sa.String(length=100), nullable=False),
    sa.Column('ticket_id', sa.String(length=100), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('is_eval', sa.Boolean(), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('system', 'ticket_id', name='uq_training_examples_system_ticket')
    )
    with op.batch_alter_table('training_examples', schema=None) as batch_op:
        batch_op.create_index('ix_training_examples_created', ['created_at'], unique=False)

    op.create_table('training_jobs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('trigger', sa.String(length=20), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('training_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_training_jobs_state', ['state'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('training_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_training_jobs_state')

    op.drop_table('training_jobs')
    with op.batch_alter_table('training_examples', schema=None) as batch_op:
        batch_op.drop_index('ix_training_examples_created')

    op.drop_table('training_examples')
    op.drop_table('poll_state')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_model_versions_field_active')

    op.drop_table('model_versions')
    op.drop_table('model_activations')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_decisions_system_decided')
        batch_op.drop_index('ix_decisions_status')

    op.drop_table('decisions')
    op.drop_table('datasets')
    op.drop_table('corrections')
