"""The tamper-evident audit log: every change, login and refusal, hash-chained."""
