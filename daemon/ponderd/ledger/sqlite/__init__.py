"""The ledger on one SQLite file: the store (owner thread, migrations) and the SQL of every table it owns."""
