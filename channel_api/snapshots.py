"""Per-process caches of what every price request reads and rarely changes:
the catalog (SKUs with list prices and category paths), the region and
customer-type trees, and each seller's strategies.

Each cached thing has a row in ``channel_cache_version`` whose random token
every writer replaces (``bump``) in its own transaction; a request reads the
tokens it needs in its first query and reloads only what moved. So every
process (every gunicorn worker) sees a change as soon as it commits, without
messages between processes, and a request costs three or four statements
however large the catalog or the seller's strategies are.

Who must bump: catalog writes (categories, units, products, SKUs, their CSV
kinds) bump ``CATALOG``; new regions and customer types bump ``TREES``; a
seller's strategies (create, update, CSV) bump ``strategies_key(owner)``.
``tests/test_channel_snapshots.py`` checks each writer.
"""
from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ledger import new_uuid7, utcnow

from .models import CacheVersion

CATALOG = "catalog"
TREES = "trees"
MAX_ENTRIES = 8192  # sellers' strategy sets dominate; an evicted one is just reloaded

T = TypeVar("T")


def strategies_key(owner_id: int) -> str:
    return f"strategies:{owner_id}"


def bump(session: Session, *names: str) -> None:
    """Give each name a new token (in the caller's transaction)."""
    if not names:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    now = utcnow()
    rows = [{"name": name, "token": new_uuid7().hex, "changed_at": now} for name in sorted(set(names))]
    statement = dialect.insert(CacheVersion)
    session.execute(statement.on_conflict_do_update(
        index_elements=[CacheVersion.name],
        set_={"token": statement.excluded.token, "changed_at": statement.excluded.changed_at}),
        rows)


def tokens(session: Session, names: Iterable[str]) -> dict[str, str | None]:
    names = list(names)
    found = dict(session.execute(select(CacheVersion.name, CacheVersion.token)
                                 .where(CacheVersion.name.in_(names))).all())
    return {name: found.get(name) for name in names}


class _Lru:
    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[tuple[str, str], tuple[str | None, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
            return hit

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_CACHE = _Lru(MAX_ENTRIES)


def _database(session: Session) -> str:
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    return engine.url.render_as_string(hide_password=True)


def cached(session: Session, name: str, token: str | None, load: Callable[[], T]) -> T:
    """The value stored for ``name`` under ``token``, or ``load()`` stored now.

    Under READ COMMITTED the load may see commits newer than the token read
    before it; the value is then stored under the older token and reloaded
    on the next request, which reads the newer token: never stale, at most
    one extra load."""
    key = (_database(session), name)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == token:
        return hit[1]
    value = load()
    _CACHE.put(key, (token, value))
    # What was just loaded lives until its token moves, and there is a lot
    # of it (a seller's strategies are hundreds of small objects; all
    # sellers', hundreds of thousands): freeze it out of the cyclic
    # collector's full collections, which would otherwise scan it all,
    # ~250 ms each, in the middle of some request. Replaced values are freed
    # by reference counting (they hold no cycles).
    gc.freeze()
    return value


def clear() -> None:
    """Forget everything (tests that rebuild a database under the same URL)."""
    with _CACHE.lock:
        _CACHE.items.clear()


@dataclass(frozen=True)
class Trees:
    region_paths: dict[int, tuple[str, ...]]
    customer_type_paths: dict[int, tuple[str, ...]]
