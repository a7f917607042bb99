"""Running Alembic from code (``channel-ledger migrate``, tests, benchmarks)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    config = alembic_config(url)
    # An installation without its version files (a packaging mistake) would
    # otherwise "upgrade" to nothing and report success.
    if ScriptDirectory.from_config(config).get_current_head() is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR / 'versions'}")
    command.upgrade(config, revision)
