"""Alembic environment and versions; Alembic owns the schema."""
