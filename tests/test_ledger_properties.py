"""The ledger against a model of itself, under random sequences of requests.

A hypothesis state machine posts standard and pending entries (alone and in
batches, atomic or not), posts pending entries in full or in part, voids and
expires them, reverses entries and replays requests by idempotency key, over
a few accounts: an unbounded asset ("custody"), two wallets that cannot go
below zero, an asset with a maximum (a credit line), a hot liability with
four balance shards and a minimum of zero, and two accounts in a second
currency. A plain-Python model predicts every outcome -- the entry, the
replayed entry, or which refusal -- and after every step the invariants say:
debits equal credits per currency; every balance is the model's; no bound is
broken; ``check_ledger`` finds nothing; a refused request changed nothing.

Each example runs in a transaction of its own that is rolled back, on both
backends, in a database of this module's own (so ``check_ledger`` and the
expiry job see exactly the example in flight), with account codes and
idempotency keys under a fresh prefix.

Below the machine, single properties met while building it; most were
ledger bugs when written (see each test's docstring).
"""
from __future__ import annotations

import copy
import dataclasses
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.orm import Session

from ledger import (
    AlreadyPosted,
    AlreadyReversed,
    AlreadyVoided,
    EntryRequest,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    LedgerError,
    LimitExceeded,
    NotPending,
    NotReversible,
    PendingExpired,
    PostingLine,
    check_ledger,
    get_accounts,
    get_entry,
    ledger_counts,
    list_entries,
    open_account,
    post_entries,
    post_entry,
    post_pending,
    reverse_entry,
    void_expired_pending,
    void_pending,
)
from ledger import accounts as ledger_accounts
from ledger import posting as ledger_posting
from ledger.timeutil import utcnow
from tests.isolated_db import isolated_engine

real_utcnow = utcnow  # the state machine's clock starts from it (StepClock)

DEBIT, CREDIT = "debit", "credit"
SOON = timedelta(milliseconds=15)  # an expiry that passes within a step or two (StepClock)
LATER = timedelta(hours=1)  # one that does not


@dataclass(frozen=True)
class Spec:
    name: str
    type: str
    currency: str
    normal: str
    min: int | None = None
    max: int | None = None
    shards: int = 1
    funding: int = 0  # its balance at the start, moved from the custody account of its currency


SPECS = (
    Spec("custody", "asset", "CNY", DEBIT),
    Spec("wallet_a", "liability", "CNY", CREDIT, min=0, funding=12_000),
    Spec("wallet_b", "liability", "CNY", CREDIT, min=0, funding=4_000),
    Spec("credit_line", "asset", "CNY", DEBIT, max=8_000, funding=5_000),
    Spec("hot", "liability", "CNY", CREDIT, min=0, shards=4, funding=6_000),
    Spec("usd_custody", "asset", "USD", DEBIT),
    Spec("usd_wallet", "liability", "USD", CREDIT, min=0, funding=3_000),
)


# ------------------------------------------------------------------------------
# the model


@dataclass
class Totals:
    """Posted and pending debits and credits of one account."""

    pd: int = 0
    pc: int = 0
    qd: int = 0
    qc: int = 0

    def add(self, side: str, amount: int, pending: bool) -> None:
        attr = ("q" if pending else "p") + ("d" if side == DEBIT else "c")
        setattr(self, attr, getattr(self, attr) + amount)


def posted_of(spec: Spec, t: Totals) -> int:
    return t.pd - t.pc if spec.normal == DEBIT else t.pc - t.pd


def inflow_outflow(spec: Spec, t: Totals) -> tuple[int, int]:
    return (t.qd, t.qc) if spec.normal == DEBIT else (t.qc, t.qd)


def available_of(spec: Spec, t: Totals) -> int:
    return posted_of(spec, t) - inflow_outflow(spec, t)[1]


def highest_of(spec: Spec, t: Totals) -> int:
    return posted_of(spec, t) + inflow_outflow(spec, t)[0]


@dataclass
class ModelEntry:
    id: str
    kind: str  # standard, pending, post_pending, void_pending, reversal
    lines: tuple  # ((code, side, amount, currency), ...): reserved for pending, else posted
    status: str  # pending, posted, voided, expired, reversed
    expires_at: datetime | None = None
    listed: bool = False  # written under the example's own code (standard and pending)


@dataclass
class Model:
    specs: dict[str, Spec]
    totals: dict[str, Totals] = field(default_factory=dict)
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    keys: dict[str, tuple] = field(default_factory=dict)  # key -> (fingerprint, entry id)

    def bound_errors(self, lines, pending: bool) -> set[type]:
        """The refusals the ledger may give for these lines (empty: none)."""
        after = {code: copy.copy(self.totals[code]) for code, *_ in lines}
        for code, side, amount, _ in lines:
            after[code].add(side, amount, pending)
        errors = set()
        for code, t in after.items():
            spec, before = self.specs[code], self.totals[code]
            if spec.min is not None and available_of(spec, t) < spec.min and \
                    available_of(spec, t) < available_of(spec, before):
                errors.add(InsufficientFunds)
            if spec.max is not None and highest_of(spec, t) > spec.max and \
                    highest_of(spec, t) > highest_of(spec, before):
                errors.add(LimitExceeded)
        return errors

    def apply(self, lines, pending: bool, sign: int = 1) -> None:
        for code, side, amount, _ in lines:
            self.totals[code].add(side, sign * amount, pending)


@dataclass(frozen=True)
class Expect:
    """What the model predicts for one request."""

    outcome: str  # "new", "replay" or "refused"
    replay_of: str | None = None
    errors: frozenset = frozenset()
    maybe_refused: frozenset = frozenset()  # refusals that depend on the clock (an expiry)


NEW = Expect("new")


def refused(*errors) -> Expect:
    return Expect("refused", errors=frozenset(errors))


def as_lines(lines) -> list[PostingLine]:
    return [PostingLine(code, side, amount, currency) for code, side, amount, currency in lines]


# ------------------------------------------------------------------------------
# strategies


@st.composite
def _balanced_lines(draw, names: tuple[str, ...], currency: str):
    """2-4 lines in one currency that balance: 1-3 debits, 1-3 credits, each
    1..10,000; accounts by name (the machine adds its prefix)."""
    debits = draw(st.integers(1, 3))
    credits = draw(st.integers(1, 4 - debits))
    total = draw(st.integers(max(debits, credits), 10_000))

    def split(parts):
        if parts == 1:
            return [total]
        cuts = sorted(draw(st.lists(st.integers(1, total - 1), min_size=parts - 1,
                                    max_size=parts - 1, unique=True)))
        return [b - a for a, b in zip([0] + cuts, cuts + [total])]

    account = st.sampled_from(names)
    lines = [(draw(account), DEBIT, amount, currency) for amount in split(debits)]
    lines += [(draw(account), CREDIT, amount, currency) for amount in split(credits)]
    return tuple(draw(st.permutations(lines)))


CURRENCIES = st.sampled_from(["CNY", "CNY", "CNY", "USD"])
LINES = {currency: _balanced_lines(tuple(s.name for s in SPECS if s.currency == currency), currency)
         for currency in ("CNY", "USD")}


# ------------------------------------------------------------------------------
# the machine


class StepClock:
    """The ledger's clock in this test: a millisecond later at every reading,
    from the real time the example starts. Expiries then pass (or not) at
    the same step of every run of an example, however loaded the machine:
    Hypothesis replays an example to shrink it and must see the same
    outcomes, hence the same draws (a wall clock made it see "inconsistent
    data generation" under load)."""

    def __init__(self) -> None:
        self.now = real_utcnow()

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


class LedgerMachine(RuleBasedStateMachine):
    """One example: a fresh prefix, one connection, one outer transaction,
    and a clock of its own (``StepClock``) for the ledger and the model."""

    def __init__(self, engine):
        super().__init__()
        clock = StepClock()
        self.clocks = [mock.patch.object(module, "utcnow", clock)
                       for module in (ledger_posting, ledger_accounts, sys.modules[__name__])]
        for patch in self.clocks:
            patch.start()
        self.prefix = "pm" + uuid.uuid4().hex[:12]
        self.connection = engine.connect()
        self.outer = self.connection.begin()
        self.session = Session(bind=self.connection, join_transaction_mode="create_savepoint",
                               expire_on_commit=False)
        self.specs = {f"{self.prefix}:{s.name}": s for s in SPECS}
        self.codes = sorted(self.specs)
        self.model = Model(self.specs, totals={code: Totals() for code in self.codes})
        self.key_pool = [f"{self.prefix}:key{n}" for n in range(3)]
        self.replayable: list[tuple[str, object, datetime | None]] = []  # (entry id, call, expiry)
        self.last_snapshot = self.last_checked = None

    def teardown(self):
        self.session.close()
        if self.outer.is_active:
            self.outer.rollback()
        self.connection.close()
        for patch in reversed(self.clocks):
            patch.stop()

    # -- helpers ---------------------------------------------------------------

    def code_of(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def snapshot(self, views=None):
        views = views or get_accounts(self.session, self.codes)
        return ({c: (v.posted_minor, v.pending_debits_minor, v.pending_credits_minor, v.version)
                 for c, v in views.items()}, ledger_counts(self.session))

    def call(self, fn):
        """Run one request as a caller would, but keep its transaction even when
        it is refused, so a refusal that wrote anything would show."""
        # The invariants took a snapshot after the last step; nothing has written since.
        before, self.last_snapshot = self.last_snapshot or self.snapshot(), None
        result = error = None
        started = utcnow()
        with self.session.begin_nested():  # a caller's transaction (the outer one is the example's)
            try:
                result = fn(self.session)
            except LedgerError as caught:
                error = caught
        return result, error, before, started, utcnow()

    def check(self, expect: Expect, view, error, before, what: str):
        """Compare one outcome with the prediction; True when a new entry was made."""
        event(f"{what}: {type(error).__name__ if error else expect.outcome}")
        if error is not None:
            allowed = expect.errors | expect.maybe_refused
            assert expect.outcome == "refused" or type(error) in expect.maybe_refused, (
                f"{what}: the model expected {expect.outcome}, the ledger refused: {error!r}")
            assert type(error) in allowed, f"{what}: expected one of {allowed}, got {error!r}"
            assert self.snapshot() == before, f"{what}: the refused request changed something"
            return False
        assert expect.outcome != "refused", f"{what}: expected {set(expect.errors)}, got {view!r}"
        if expect.outcome == "replay":
            assert view.id == expect.replay_of, f"{what}: the replay answered another entry"
            assert self.snapshot() == before, f"{what}: the replay changed something"
            return False
        return True

    def assert_status(self, *entries: ModelEntry):
        for entry in entries:
            assert get_entry(self.session, entry.id).status == entry.status, f"{entry.kind} {entry.id}"

    def assert_every_status(self):
        """Every standard and pending entry of the example, as the journal lists them."""
        views, _ = list_entries(self.session, code=self.prefix, limit=1000)
        listed = {e.id: e.status for e in self.model.entries.values() if e.listed}
        assert {v.id: v.status for v in views} == listed

    def predict_entry(self, model: Model, kind, lines, key, expires_at) -> Expect:
        if key is not None and key in model.keys:
            fingerprint, entry_id = model.keys[key]
            same = fingerprint == ("entry", kind, lines, expires_at)
            return Expect("replay", replay_of=entry_id) if same else refused(IdempotencyConflict)
        errors = model.bound_errors(lines, pending=kind == "pending")
        return refused(*errors) if errors else NEW

    def record_entry(self, model: Model, view, kind, lines, key, expires_at, call=None):
        assert (view.kind.value, view.status) == (kind, "pending" if kind == "pending" else "posted")
        assert [(p.account, p.side.value, p.amount_minor, p.currency) for p in view.postings] == list(lines)
        model.entries[view.id] = ModelEntry(view.id, kind, lines, "pending" if kind == "pending" else "posted",
                                            expires_at, listed=True)
        model.apply(lines, pending=kind == "pending")
        if key is not None:
            model.keys[key] = (("entry", kind, lines, expires_at), view.id)
            if call is not None:
                self.replayable.append((view.id, call, expires_at))

    def draw_request(self, data, expiries=("none", "later", "soon")):
        currency = data.draw(CURRENCIES, label="currency")
        lines = tuple((self.code_of(name), side, amount, ccy)
                      for name, side, amount, ccy in data.draw(LINES[currency], label="lines"))
        pending = data.draw(st.booleans(), label="pending")
        expires_at = None
        if pending:
            choice = data.draw(st.sampled_from(expiries), label="expiry")
            expires_at = {"none": None, "later": utcnow() + LATER, "soon": utcnow() + SOON}[choice]
        key = self.draw_key(data)
        request = EntryRequest(self.prefix, as_lines(lines), idempotency_key=key,
                               pending=pending, expires_at=expires_at)
        return request, ("pending" if pending else "standard"), lines

    def draw_key(self, data):
        """No key three times in four; else one of a small pool, so replays and conflicts happen."""
        if data.draw(st.integers(0, 3), label="keyed") != 0:
            return None
        return data.draw(st.sampled_from(self.key_pool), label="key")

    def draw_entry(self, data, kinds, status):
        """Mostly an entry the request can apply to, else one of the right kind;
        one time in five any entry at all."""
        entries = self.model.entries.values()
        ids = (sorted(e.id for e in entries if e.kind in kinds and e.status == status)
               or sorted(e.id for e in entries if e.kind in kinds))
        # Both draws are made whatever the lists hold, from fixed ranges:
        # statuses depend on the clock (entries expiring "soon"), and
        # Hypothesis refuses draws whose shape differs between runs of the
        # same example (FlakyStrategyDefinition).
        any_entry = data.draw(st.integers(0, 4), label="any entry") == 0
        pick = data.draw(st.integers(0, 2**16), label="entry")
        if not ids or any_entry:
            ids = sorted(self.model.entries)
        return self.model.entries[ids[pick % len(ids)]]

    def has_pending(self):
        return any(e.kind == "pending" for e in self.model.entries.values())

    # -- rules -----------------------------------------------------------------

    @initialize()
    def open_and_fund(self):
        with self.session.begin_nested():
            for code, spec in self.specs.items():
                view = open_account(self.session, code, spec.name, spec.type, spec.currency,
                                    min_balance_minor=spec.min, max_balance_minor=spec.max,
                                    balance_shards=spec.shards)
                assert (view.posted_minor, view.balance_shards) == (0, spec.shards)
            for code, spec in self.specs.items():
                if spec.funding:
                    source = self.code_of("custody" if spec.currency == "CNY" else "usd_custody")
                    up, down = (code, source) if spec.normal == DEBIT else (source, code)
                    lines = ((up, DEBIT, spec.funding, spec.currency),
                             (down, CREDIT, spec.funding, spec.currency))
                    view = post_entry(self.session, EntryRequest(self.prefix, as_lines(lines)))
                    self.record_entry(self.model, view, "standard", lines, None, None)

    @rule(data=st.data())
    def post_an_entry(self, data):
        request, kind, lines = self.draw_request(data)
        result, error, before, started, ended = self.call(lambda s: post_entry(s, request))
        expect = self.predict_entry(self.model, kind, lines, request.idempotency_key, request.expires_at)
        if request.expires_at is not None and request.expires_at <= ended:
            # The expiry passed while the request was on its way: it may be refused as malformed.
            expect = dataclasses.replace(expect, maybe_refused=expect.maybe_refused | {InvalidEntry})
        if self.check(expect, result, error, before, f"post {kind}"):
            self.record_entry(self.model, result, kind, lines, request.idempotency_key,
                              request.expires_at, call=lambda s: post_entry(s, request))

    @rule(data=st.data(), atomic=st.booleans())
    def post_a_batch(self, data, atomic):
        drawn = [self.draw_request(data, expiries=("none", "later"))
                 for _ in range(data.draw(st.integers(2, 4), label="batch size"))]
        requests = [request for request, _, _ in drawn]
        results, error, before, _, _ = self.call(lambda s: post_entries(s, requests, atomic=atomic))
        if atomic:
            sunk = self.first_refusal(drawn)
            if sunk is not None:
                # The first refusal is raised and nothing of the batch is written.
                index, expect = sunk
                assert results is None, f"atomic batch: request {index} should have sunk it"
                self.check(expect, None, error, before, f"atomic batch [{index}]")
                return
        assert error is None, f"the batch (atomic={atomic}) raised {error!r}; the model accepts it"
        new_replayable = []
        for index, (request, kind, lines) in enumerate(drawn):
            expect = self.predict_entry(self.model, kind, lines, request.idempotency_key,
                                        request.expires_at)
            outcome = results[index]
            assert outcome.index == index
            event(f"batch (atomic={atomic}): "
                  + (type(outcome.error).__name__ if outcome.error else "replay" if outcome.replayed else "new"))
            if outcome.ok and expect.outcome == "new":
                assert not outcome.replayed
                self.record_entry(self.model, outcome.entry, kind, lines, request.idempotency_key,
                                  request.expires_at)
                if request.idempotency_key:
                    new_replayable.append((outcome.entry.id, request))
            elif outcome.ok:
                assert expect.outcome == "replay" and outcome.replayed, (
                    f"batch [{index}]: expected {expect}, got {outcome}")
                assert outcome.entry.id == expect.replay_of
            else:
                assert expect.outcome == "refused", f"batch [{index}]: expected {expect}, got {outcome}"
                assert type(outcome.error) in expect.errors, (
                    f"batch [{index}]: expected {set(expect.errors)}, got {outcome.error!r}")
        for entry_id, request in new_replayable:
            self.replayable.append((entry_id, (lambda r: lambda s: post_entry(s, r))(request),
                                    request.expires_at))

    def first_refusal(self, drawn):
        """Where an atomic batch would be refused, on a copy of the model: (index, Expect) or None."""
        model = copy.deepcopy(self.model)
        for index, (request, kind, lines) in enumerate(drawn):
            expect = self.predict_entry(model, kind, lines, request.idempotency_key, request.expires_at)
            if expect.outcome == "refused":
                return index, expect
            if expect.outcome == "new":
                model.apply(lines, pending=kind == "pending")
                if request.idempotency_key:
                    model.keys[request.idempotency_key] = (
                        ("entry", kind, lines, request.expires_at), f"batch[{index}]")
        return None

    @precondition(lambda self: self.has_pending())
    @rule(data=st.data())
    def post_a_pending_entry(self, data):
        entry = self.draw_entry(data, ("pending",), "pending")
        mode = data.draw(st.sampled_from(["full", "full", "part", "part", "too much"]), label="mode")
        reserved: dict[tuple, int] = defaultdict(int)
        for code, side, amount, currency in entry.lines:
            reserved[(code, side, currency)] += amount
        lines = None
        # Drawn whatever the entry holds, from fixed ranges (see draw_entry).
        picks = [data.draw(st.integers(0, 2**16), label=label)
                 for label in ("ccy", "debit", "credit", "amount")]
        if not reserved:  # a void_pending entry, drawn to be refused: nothing to take part of
            mode = "full"
        if mode != "full":
            currencies = sorted({c for _, _, c in reserved})
            currency = currencies[picks[0] % len(currencies)]
            debits = sorted(k for k in reserved if k[1] == DEBIT and k[2] == currency)
            credits = sorted(k for k in reserved if k[1] == CREDIT and k[2] == currency)
            debit, credit = debits[picks[1] % len(debits)], credits[picks[2] % len(credits)]
            most = min(reserved[debit], reserved[credit])
            amount = (max(reserved[debit], reserved[credit]) + 1 if mode == "too much"
                      else 1 + picks[3] % most)
            lines = ((debit[0], DEBIT, amount, currency), (credit[0], CREDIT, amount, currency))
        key = self.draw_key(data)

        def send(s):
            return post_pending(s, entry.id, postings=as_lines(lines) if lines else None,
                                idempotency_key=key)

        result, error, before, started, ended = self.call(send)
        posted_lines = lines if lines is not None else entry.lines
        if entry.kind != "pending":
            expect = refused(NotPending)
        elif mode == "too much":
            expect = refused(InvalidEntry)
        else:
            expect = self.predict_resolution(entry, "post", posted_lines, key, started, ended)
        if self.check(expect, result, error, before, f"post pending ({mode})"):
            assert result.kind.value == "post_pending" and result.pending_id == entry.id
            assert [(p.account, p.side.value, p.amount_minor) for p in result.postings] == [
                line[:3] for line in posted_lines]
            self.record_resolution(entry, result, "post", posted_lines, key, send)
        self.assert_status(entry)

    @precondition(lambda self: self.has_pending())
    @rule(data=st.data())
    def void_a_pending_entry(self, data):
        entry = self.draw_entry(data, ("pending",), "pending")
        key = self.draw_key(data)

        def send(s):
            return void_pending(s, entry.id, idempotency_key=key)

        result, error, before, started, ended = self.call(send)
        expect = (refused(NotPending) if entry.kind != "pending"
                  else self.predict_resolution(entry, "void", (), key, started, ended))
        if self.check(expect, result, error, before, "void pending"):
            assert result.kind.value == "void_pending" and result.postings == ()
            self.record_resolution(entry, result, "void", (), key, send)
        self.assert_status(entry)

    def predict_resolution(self, entry, action, lines, key, started, ended) -> Expect:
        if key is not None and key in self.model.keys:
            fingerprint, entry_id = self.model.keys[key]
            same = fingerprint == (action, entry.id, tuple(lines))
            return Expect("replay", replay_of=entry_id) if same else refused(IdempotencyConflict)
        if entry.status == "posted":
            return refused(AlreadyPosted)
        if entry.status in ("voided", "expired"):
            return refused(AlreadyVoided)
        if action == "post" and entry.expires_at is not None:
            if entry.expires_at <= started:
                return refused(PendingExpired)
            if entry.expires_at <= ended:
                return Expect("new", maybe_refused=frozenset({PendingExpired}))
        return NEW

    def record_resolution(self, entry, view, action, lines, key, send):
        self.model.apply(entry.lines, pending=True, sign=-1)  # release every reservation
        self.model.apply(lines, pending=False)
        entry.status = "posted" if action == "post" else "voided"
        kind = "post_pending" if action == "post" else "void_pending"
        self.model.entries[view.id] = ModelEntry(view.id, kind, tuple(lines), "posted")
        # A new entry that reserves nothing is "posted" and reads back the same.
        assert get_entry(self.session, view.id).status == view.status == "posted"
        if key is not None:
            self.model.keys[key] = ((action, entry.id, tuple(lines)), view.id)
            self.replayable.append((view.id, send, None))

    @rule(data=st.data())
    def reverse_an_entry(self, data):
        entry = self.draw_entry(data, ("standard", "post_pending"), "posted")
        key = self.draw_key(data)

        def send(s):
            return reverse_entry(s, entry.id, idempotency_key=key)

        result, error, before, _, _ = self.call(send)
        mirror = tuple((code, CREDIT if side == DEBIT else DEBIT, amount, currency)
                       for code, side, amount, currency in entry.lines)
        if entry.kind not in ("standard", "post_pending"):
            expect = refused(NotReversible)
        elif key is not None and key in self.model.keys:
            fingerprint, entry_id = self.model.keys[key]
            expect = (Expect("replay", replay_of=entry_id) if fingerprint == ("reversal", entry.id)
                      else refused(IdempotencyConflict))
        elif entry.status == "reversed":
            expect = refused(AlreadyReversed)
        else:
            errors = self.model.bound_errors(mirror, pending=False)
            expect = refused(*errors) if errors else NEW
        if self.check(expect, result, error, before, f"reverse {entry.kind}"):
            assert result.kind.value == "reversal" and result.reverses_id == entry.id
            assert [(p.account, p.side.value, p.amount_minor, p.currency) for p in result.postings] == list(mirror)
            self.model.apply(mirror, pending=False)
            entry.status = "reversed"
            self.model.entries[result.id] = ModelEntry(result.id, "reversal", mirror, "posted")
            if key is not None:
                self.model.keys[key] = (("reversal", entry.id), result.id)
                self.replayable.append((result.id, send, None))
        self.assert_status(entry)

    @precondition(lambda self: self.replayable)
    @rule(data=st.data())
    def replay_a_request(self, data):
        # A pending request whose expiry has passed is left out: see
        # test_a_pending_request_replayed_after_its_expiry_answers_the_entry_it_made.
        candidates = [r for r in self.replayable if r[2] is None or r[2] > utcnow() + timedelta(seconds=1)]
        pick = data.draw(st.integers(0, 2**16), label="replay")  # fixed shape: see draw_entry
        if not candidates:
            return
        entry_id, send, _ = candidates[pick % len(candidates)]
        result, error, before, _, _ = self.call(send)
        assert error is None, f"a replay was refused: {error!r}"
        self.check(Expect("replay", replay_of=entry_id), result, None, before, "replay")

    @rule()
    def expire_everything_that_can_expire(self):
        open_with_expiry = [e for e in self.model.entries.values()
                            if e.kind == "pending" and e.status == "pending" and e.expires_at]
        result, error, _, _, _ = self.call(
            lambda s: void_expired_pending(s, now=utcnow() + timedelta(days=3650)))
        assert error is None, error
        assert result == len(open_with_expiry)
        for entry in open_with_expiry:
            self.model.apply(entry.lines, pending=True, sign=-1)
            entry.status = "expired"
        self.assert_every_status()

    # -- invariants ------------------------------------------------------------

    @invariant()
    def the_ledger_is_sound_and_agrees_with_the_model(self):
        views = self.balances_are_the_models_and_within_bounds()
        snapshot = self.snapshot(views)
        # The database holds nothing but this example's accounts and an
        # append-only journal: when no balance, version or row count moved
        # since the last check, the journal is the one already checked.
        if snapshot != self.last_checked:
            assert check_ledger(self.session) == []
            self.last_checked = snapshot
        self.last_snapshot = snapshot

    def balances_are_the_models_and_within_bounds(self):
        views = get_accounts(self.session, self.codes)
        assert sorted(views) == self.codes
        posted_sum, pending_debits, pending_credits = defaultdict(int), defaultdict(int), defaultdict(int)
        for code, view in views.items():
            spec, t = self.specs[code], self.model.totals[code]
            expected = (posted_of(spec, t), t.qd, t.qc, available_of(spec, t),
                        posted_of(spec, t) + inflow_outflow(spec, t)[0] - inflow_outflow(spec, t)[1])
            actual = (view.posted_minor, view.pending_debits_minor, view.pending_credits_minor,
                      view.available_minor, view.pending_minor)
            assert actual == expected, f"{spec.name}: ledger {actual} != model {expected}"
            # Debit-normal balances count positive, credit-normal negative.
            posted_sum[spec.currency] += view.posted_minor if spec.normal == DEBIT else -view.posted_minor
            pending_debits[spec.currency] += view.pending_debits_minor
            pending_credits[spec.currency] += view.pending_credits_minor
            if spec.min is not None:
                assert view.available_minor >= spec.min, f"{spec.name} below its minimum"
            if spec.max is not None:
                inflow = view.pending_debits_minor if spec.normal == DEBIT else view.pending_credits_minor
                assert view.posted_minor + inflow <= spec.max, f"{spec.name} above its maximum"
        assert all(total == 0 for total in posted_sum.values()), dict(posted_sum)
        assert pending_debits == pending_credits
        return views


@pytest.fixture(scope="module")
def engine(backend, tmp_path_factory):
    """A database of this module's own: every example's transaction is rolled
    back, so it holds only the example in flight; check_ledger and the expiry
    job then see exactly what the model knows (and run at the speed of a
    small journal, whatever the rest of the suite committed)."""
    with isolated_engine(backend, tmp_path_factory.mktemp("db")) as engine:
        yield engine


STATE_MACHINE_SETTINGS = settings(
    max_examples=35,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_the_ledger_agrees_with_its_model_under_random_requests(engine):
    """35 random sequences of up to 30 requests per backend (about 15-35 s each)."""
    run_state_machine_as_test(lambda: LedgerMachine(engine), settings=STATE_MACHINE_SETTINGS)


# ------------------------------------------------------------------------------
# single properties found while building the model


def _two_accounts(session, prefix):
    cash, wallet = f"{prefix}:cash", f"{prefix}:wallet"
    open_account(session, cash, "Cash", "asset", "CNY")
    open_account(session, wallet, "Wallet", "liability", "CNY", min_balance_minor=0)
    return cash, wallet


def _hold(cash, wallet, amount=100, **kwargs):
    return EntryRequest("hold", [PostingLine(cash, "debit", amount, "CNY"),
                                 PostingLine(wallet, "credit", amount, "CNY")], pending=True, **kwargs)


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))))
def test_an_expiry_given_in_any_timezone_is_the_same_instant(session, offset):
    cash, wallet = _two_accounts(session, "tz" + uuid.uuid4().hex[:10])
    expires_at = (utcnow() + timedelta(hours=1)).astimezone(offset)
    entry = post_entry(session, _hold(cash, wallet, expires_at=expires_at))
    assert get_entry(session, entry.id).expires_at == expires_at
    void_expired_pending(session, now=expires_at.astimezone(timezone.utc) - timedelta(minutes=1))
    assert get_entry(session, entry.id).status == "pending", "voided as expired before its expiry"
    void_expired_pending(session, now=expires_at.astimezone(timezone.utc) + timedelta(minutes=1))
    assert get_entry(session, entry.id).status == "expired", "not voided after its expiry"


def test_posting_a_pending_entry_with_an_empty_list_of_lines_leaves_the_ledger_healthy(session):
    """``post_pending(postings=[])`` asks to post nothing. Refusing it
    (InvalidEntry) or posting nothing and releasing the rest are both fine;
    writing a post_pending entry without postings, which check_ledger reports,
    is not."""
    cash, wallet = _two_accounts(session, "ep" + uuid.uuid4().hex[:10])
    entry = post_entry(session, _hold(cash, wallet))
    try:
        with session.begin_nested():
            post_pending(session, entry.id, postings=[])
    except InvalidEntry:
        assert get_entry(session, entry.id).status == "pending"
    assert check_ledger(session) == []


def test_a_pending_request_replayed_after_its_expiry_answers_the_entry_it_made(session):
    """An idempotent retry gets the original answer: a pending entry made
    with an expiry that has passed since is still the entry the key made."""
    cash, wallet = _two_accounts(session, "rx" + uuid.uuid4().hex[:10])
    request = _hold(cash, wallet, idempotency_key=f"rx-{uuid.uuid4().hex}",
                    expires_at=utcnow() + timedelta(milliseconds=50))
    first = post_entry(session, request)
    time.sleep(0.1)
    again = post_entry(session, request)
    assert again.id == first.id


def test_a_void_entry_reads_back_with_the_status_it_was_returned_with(session):
    """What void_pending answers and what reading the entry back says agree
    (they once did not: "voided", then "posted")."""
    cash, wallet = _two_accounts(session, "vs" + uuid.uuid4().hex[:10])
    pending = post_entry(session, _hold(cash, wallet))
    voided = void_pending(session, pending.id)
    assert get_entry(session, voided.id).status == voided.status
    assert get_entry(session, pending.id).status == "voided"
