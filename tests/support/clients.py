"""Clients of the servers the tests start."""

from __future__ import annotations

from income_bundle.client import V2Client


def routed(seldon, target: str, protocol: str = "rest") -> V2Client:
    """A tritonclient-based client that sends the seldon-model header, as for seldon-mesh."""
    address = seldon.http_url.removeprefix("http://") if protocol == "rest" else seldon.grpc_address
    return V2Client(address, protocol, headers={"seldon-model": target})
