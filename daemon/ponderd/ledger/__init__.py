"""The ledger: tenants, budgets and windows, reservations and settlement, spend, idempotency keys, API keys.

This package holds the values (types.py) and the seams (budgets.py, idempotency.py,
accounts.py: Protocols) every backend implements; sqlite/ is the implementation
of a single host. A second backend is a new folder beside it.
"""
