"""Fixtures of the agent tests that need a real peer of the machine's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import hypervisor_host


@pytest.fixture(scope="session")
def libvirt_host() -> Iterator[hypervisor_host.LibvirtHost]:
    """This machine's libvirt behind an sshd of the run's own (tests/hypervisor_host.py)."""
    reason = hypervisor_host.unavailable()
    if reason is not None:
        pytest.skip(reason)
    with hypervisor_host.libvirt_host() as host:
        yield host
