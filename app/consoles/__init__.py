"""Console sessions: brokered, shared, recorded (DESIGN §5)."""
