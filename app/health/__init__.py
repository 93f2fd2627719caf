"""Hardware health: sensors, event logs and FRU inventory read from BMCs, and verdicts."""
