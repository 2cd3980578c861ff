"""Embedded mode: every service, the bus and the bucket on one machine, no cloud account."""
