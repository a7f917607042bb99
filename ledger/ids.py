"""Identifiers: time-ordered UUIDs generated in the process, and the public,
prefixed form the API shows (``je_…``, ``acct_…``).

Entry ids are made here rather than by a database sequence so a batch of
entries and their postings can be written without a round trip to learn ids;
the time prefix keeps the primary-key index append-mostly.
"""
from __future__ import annotations

import os
import random
import threading
import time
import uuid

ENTRY_PREFIX = "je_"
ACCOUNT_PREFIX = "acct_"


_lock = threading.Lock()
_last = [0, 0]  # [milliseconds, counter] of the last id made in this process

# The random bits: a generator of this module's own, seeded from the OS and
# seeded again in a forked child (so two workers of one gunicorn master never
# share a sequence), rather than a system call per id; uniqueness comes from
# the time and counter within a process, the 62 bits keep processes apart.
_random = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def new_uuid7() -> uuid.UUID:
    """A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, a 12-bit
    counter so ids made in one process within one millisecond still sort in
    the order they were made (RFC 9562 method 1), then 62 random bits."""
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last[0]:
            ms, counter = _last[0], _last[1] + 1
            if counter > 0xFFF:  # 4,096 ids in one millisecond: borrow the next one
                ms, counter = ms + 1, 0
        else:
            counter = 0
        _last[0], _last[1] = ms, counter
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= _random.getrandbits(62)
    return uuid.UUID(int=value)


def entry_public_id(entry_id: uuid.UUID) -> str:
    return ENTRY_PREFIX + entry_id.hex


def parse_entry_id(public_id: str) -> uuid.UUID | None:
    """The UUID behind ``je_…`` (or a bare hex/UUID string); None if malformed."""
    raw = public_id[len(ENTRY_PREFIX):] if public_id.startswith(ENTRY_PREFIX) else public_id
    try:
        return uuid.UUID(raw)
    except (ValueError, AttributeError):
        return None


def new_account_public_id() -> str:
    """Opaque: the API never shows the account table's sequence number."""
    return ACCOUNT_PREFIX + new_uuid7().hex
