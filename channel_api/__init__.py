"""Parties, coverage, catalog, prices, promotions, credit policies, orders and
the storefront REST API. May import: ledger, payments, clearing. (Later issue.)"""
