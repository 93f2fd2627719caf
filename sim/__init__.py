"""Simulated IPMI BMCs (RMCP+ over UDP) that stand in for a fleet of servers in tests and demos."""
