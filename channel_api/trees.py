"""Trees of codes (regions, customer types, categories): subtrees for
filters, and root-first paths for scope matching.

Trees are small next to parties and SKUs (thousands of regions at most), so
``paths`` loads a whole tree in one query and walks it in memory.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session


def subtree_ids(model, root_id: int):
    """A selectable of the ids of ``root_id`` and all its descendants
    (a recursive CTE, on SQLite and PostgreSQL)."""
    # One CTE name per tree, so a query may filter on two trees at once.
    tree = select(model.id).where(model.id == root_id).cte(
        f"subtree_{model.__tablename__}", recursive=True)
    child = select(model.id).join(tree, model.parent_id == tree.c.id)
    tree = tree.union_all(child)
    return select(tree.c.id)


def paths(session: Session, model) -> dict[int, tuple[str, ...]]:
    """For every node id, the codes from the root down to the node itself."""
    rows = session.execute(select(model.id, model.code, model.parent_id)).all()
    parent = {row_id: parent_id for row_id, _, parent_id in rows}
    code = {row_id: row_code for row_id, row_code, _ in rows}
    out: dict[int, tuple[str, ...]] = {}

    def walk(node: int) -> tuple[str, ...]:
        # Iterative so a deep tree cannot hit the recursion limit.
        chain = []
        current: int | None = node
        while current is not None and current not in out:
            chain.append(current)
            current = parent[current]
        prefix = out[current] if current is not None else ()
        for item in reversed(chain):
            prefix = (*prefix, code[item])
            out[item] = prefix
        return out[node]

    for row_id in code:
        walk(row_id)
    return out


def path_of(session: Session, model, node_id: int) -> tuple[str, ...]:
    """The root-first codes of one node, walking up with a recursive CTE."""
    up = (select(model.id, model.code, model.parent_id,
                 select(0).scalar_subquery().label("depth"))
          .where(model.id == node_id).cte("up", recursive=True))
    parent = (select(model.id, model.code, model.parent_id, (up.c.depth + 1).label("depth"))
              .join(up, model.id == up.c.parent_id))
    up = up.union_all(parent)
    rows = session.execute(select(up.c.code, up.c.depth).order_by(up.c.depth.desc())).all()
    return tuple(code for code, _ in rows)
