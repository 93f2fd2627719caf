"""Process-wide settings for Rackhand's long-running processes: the server, its workers and
site agents (the garbage collector; the warnings and logs they print)."""

from __future__ import annotations

import gc
import logging
import warnings

from cryptography.utils import CryptographyDeprecationWarning


def ignore_asyncssh_dsa_warnings() -> None:
    """Leave out the one warning that importing asyncssh raises under cryptography 51.

    asyncssh 2.24 names cryptography's DSA classes as it is imported, and cryptography 51 warns
    on each name: five lines at every start about keys Rackhand never makes nor offers. Call it
    before anything imports asyncssh (the drivers do, and the central imports their checks).
    """
    warnings.filterwarnings(
        "ignore", "DSA is deprecated", CryptographyDeprecationWarning, r"asyncssh\."
    )


def quiet_asyncssh() -> None:
    """asyncssh logs every channel at INFO (five lines per command): a guest poll of a host
    would fill the log. Its warnings and errors still show."""
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def tune() -> None:
    """Freeze what is loaded so far out of the collector; young collections every 10,000.

    Nearly all that a request, a report or a packet allocates is freed by reference counting,
    yet with the default threshold (700 allocations) the collector runs hundreds of times a
    second under load, and its full runs walk every long-lived object: modules, the app, ORM
    metadata, warm sessions (63 ms for one full run over 100,000 objects, measured). Call it
    once per process, after the imports and before the work: frozen garbage is never freed.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
