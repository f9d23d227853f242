"""The fleet ledger: one PostgreSQL database for many hosts, each serving from leases in its local SQLite file.

schema.py creates and migrates the central tables; central.py holds their SQL
(one transaction per function); fleet.py is the host's side: the leases it
holds, the spend records it ships, the keyring it keeps current, and the
Budgets and Accounts it gives the daemon. docs/architecture.md § The fleet
ledger states the invariants.
"""
