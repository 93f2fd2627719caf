"""The `rackhand` command: serve the central, and drive it from a shell or a script."""
