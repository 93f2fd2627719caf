"""Central processes: who owns live tasks and consoles, and who holds the data folder."""
