"""Host names and IP addresses as the URL input guard compares them, and URL_ALLOWLIST.

Pure and free of I/O, so that the configuration can parse URL_ALLOWLIST once,
at startup (a bad entry stops the worker instead of failing every URL job), and
the guard in :mod:`.sources.guarded_http` compares each resolved address with the result.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def normalise_host(host: str) -> str:
    """``Example.COM.`` and ``example.com`` are the same host."""
    return host.rstrip(".").lower()


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses hidden in an IPv6 one (mapped, NAT64, 6to4, Teredo): each must pass the checks too."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None]
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [ip for ip in found if ip is not None]


@dataclass(frozen=True)
class UrlAllowlist:
    """URL_ALLOWLIST: hosts by name, and IP networks, that URL inputs may reach although they are not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> UrlAllowlist:
        """Comma-separated host names, IP addresses and CIDRs; ``ValueError`` names the entry that is none of them."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in text.split(","):
            entry = raw.strip().removeprefix("[").removesuffix("]")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "/" in entry or ":" in entry:
                    raise ValueError(f"entry {raw.strip()!r} is not a host name, IP address or CIDR") from None
                hosts.add(normalise_host(entry))
        return cls(frozenset(hosts), tuple(networks))

    def covers(self, host: str, address: IPAddress) -> bool:
        if normalise_host(host) in self.hosts:
            return True
        candidates = {address, *embedded_ipv4(address)}
        return any(ip.version == net.version and ip in net for ip in candidates for net in self.networks)
