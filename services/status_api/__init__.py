"""status-api: the read model of the ledger over HTTP, plus dead-letter replay."""
