"""The schema: Alembic's migrations and the ORM models describe the same
database (warehouse's ``alembic check``), and the import rules hold."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ledger.models import POSTGRESQL_TRIGGER_CHECKED_FKS, Base, include_object
import service.models  # noqa: F401  (its tables belong to the same metadata)
import channel_api.models  # noqa: F401  (so are the channel tables)
import payments.models  # noqa: F401  (and the payment tables)
import clearing.models  # noqa: F401  (and the clearing tables)
import clearing.settlement_models  # noqa: F401  (and settlement and payouts)

ROOT = Path(__file__).resolve().parents[1]


def test_the_migrated_database_matches_the_models(engine):
    opts = {"compare_type": True}
    if engine.dialect.name == "postgresql":  # two foreign keys are a trigger there (0020)
        opts["include_object"] = include_object
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=opts)
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_on_postgresql_only_the_journals_two_foreign_keys_are_left_to_the_trigger(engine):
    """The filter hides exactly the two constraints migration 0020 drops."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    if engine.dialect.name != "postgresql":
        assert differences == []
        return
    assert sorted(d[1].name for d in differences) == sorted(POSTGRESQL_TRIGGER_CHECKED_FKS)
    assert {d[0] for d in differences} == {"add_fk"}


def test_every_constraint_has_a_predictable_name():
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            assert constraint.name, f"unnamed constraint on {table.name}"


def test_the_import_rules_of_the_architecture_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), str(ROOT / "setup.cfg")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken" in result.stdout


def test_the_package_data_ships_every_migration():
    """`pip install .` (the Dockerfile) must carry the version files, which
    are not a Python package of their own."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = config["options.package_data"]["migrations"].replace(" ", "").split(",")
    assert "versions/*.py" in patterns
    assert list((ROOT / "migrations" / "versions").glob("0001_*.py"))
