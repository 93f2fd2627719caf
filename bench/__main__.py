"""`make bench`: every benchmark, one after the other."""

import sys

from bench import agents, audit, catalogue, consoles, dashboard, guests, health, power

SUITES = {
    "catalogue": catalogue.run,
    "audit": audit.run,
    "power": power.run,
    "consoles": consoles.run,
    "dashboard": dashboard.run,
    "agents": agents.run,
    "guests": guests.run,
    "health": health.run,
}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(SUITES):
        SUITES[name]()
