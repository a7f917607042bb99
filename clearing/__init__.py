"""Clearing: pure splitting of cash among a rule's legs and its unwinding
(``split.py``), choosing a rule (``rule_match.py``), the business calendar
(``calendar.py``), and the rules' and calendar's tables (``models.py``).
Posting clearings, documents, release, settlement and payouts: issue 6,
next. May import: ledger."""
