"""Allocating interest the custody account earned, as a pure calculation.

The platform keeps ``platform_bp`` basis points of it (rounded down to the
fen); the rest goes to the parties in proportion to the balances given (their
wallets at the period's end), each share rounded down, and the fen left over
go one each to the largest fractional parts (ties: the party code first in
order), so the shares always add up to the interest to the fen. With no
positive balance, the platform keeps everything.
"""
from __future__ import annotations

from collections.abc import Mapping


def allocate(amount_minor: int, balances: Mapping[str, int], platform_bp: int
             ) -> tuple[int, dict[str, int]]:
    """(the platform's share, each party's share); zero shares are left out."""
    if not isinstance(amount_minor, int) or amount_minor < 0:
        raise ValueError("amount_minor must be a whole number of minor units, 0 or more")
    if not isinstance(platform_bp, int) or not 0 <= platform_bp <= 10_000:
        raise ValueError("platform_bp must be between 0 and 10000")
    platform = amount_minor * platform_bp // 10_000
    weights = {party: balance for party, balance in balances.items() if balance > 0}
    rest, total = amount_minor - platform, sum(weights.values())
    if not total:
        return amount_minor, {}
    shares = {party: rest * weight // total for party, weight in weights.items()}
    leftover = rest - sum(shares.values())
    # Largest remainder first: the fractional part of rest * weight / total.
    order = sorted(weights, key=lambda p: (-(rest * weights[p] % total), p))
    for party in order[:leftover]:
        shares[party] += 1
    return platform, {party: share for party, share in shares.items() if share}
