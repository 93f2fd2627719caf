"""Simulated IPMI BMCs (RMCP+ over UDP) that stand in for a fleet of servers in tests and demos."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# asyncssh 2.24 names cryptography's DSA classes as it is imported, and cryptography 51 warns on
# every such name: five warnings per process for DSA keys we never make or offer (host keys are
# ed25519; asyncssh offers no ssh-dss by default). Only that warning, only from asyncssh.
warnings.filterwarnings(
    "ignore", "DSA is deprecated", CryptographyDeprecationWarning, r"asyncssh\."
)
