"""The ledger: every event received, every run and its timeline, dead letters and the outbox.

One database (SQLite embedded, PostgreSQL in gcp). A handler's state change, its inbox
row and its outgoing events commit in one transaction.
"""

from .db import Ledger

__all__ = ["Ledger"]
