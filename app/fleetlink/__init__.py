"""The link between the central and its agents (the built-in one for now)."""
