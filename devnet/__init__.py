"""A local, deterministic AT Protocol network (relay, PDS hosts, PLC directory, labeler) with faults.

See docs/devnet.md. Programmatic use:

    async with Devnet(DevnetConfig(repos=100, seed=7)) as net:
        ...  # net.relay_url, net.plc_url, net.labeler_url, net.pds_urls, net.truth(), net.faults
"""

from devnet.config import DevnetConfig, FaultConfig
from devnet.faults import Faults
from devnet.server import Devnet

__all__ = ["Devnet", "DevnetConfig", "FaultConfig", "Faults"]
