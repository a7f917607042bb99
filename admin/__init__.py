"""The finance web UI: statements, approvals, reconciliation, reports.
May import everything below it. (Built in a later issue.)"""
