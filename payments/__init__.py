"""Payables, funding sources, gateway adapters and callbacks, refunds.
May import: ledger. (Built in a later issue.)"""
