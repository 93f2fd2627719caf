"""Console sessions: brokered, shared, recorded (docs/consoles.md)."""
