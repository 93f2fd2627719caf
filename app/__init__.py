"""Rackhand central service: catalogue, identity, jobs, consoles and audit."""
