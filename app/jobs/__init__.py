"""Jobs: power and boot requests, one task per device, dispatched to the agents."""
