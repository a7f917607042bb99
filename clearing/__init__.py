"""Clearing rules, splits, inter-party documents, release, settlement and
payouts. May import: ledger. (Built in a later issue.)"""
