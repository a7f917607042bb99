"""``ledger.ids.new_uuid7``: RFC 9562 version 7, ordered within a process,
and a forked child (a gunicorn worker) draws other random bits than its
parent."""
from __future__ import annotations

import os
import uuid

import pytest

from ledger.ids import new_uuid7


def test_version_variant_and_order():
    ids = [new_uuid7() for _ in range(10_000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)          # counter within a millisecond keeps the order
    assert len(set(ids)) == len(ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_draws_other_random_bits():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next random bits, then leave at once
        os.write(write, new_uuid7().bytes)
        os._exit(0)
    os.close(write)
    child = uuid.UUID(bytes=os.read(read, 16))
    os.close(read)
    os.waitpid(pid, 0)
    parent = new_uuid7()
    random_bits = (1 << 62) - 1
    assert child.int & random_bits != parent.int & random_bits
