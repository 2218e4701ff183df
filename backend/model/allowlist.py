"""Which hosts and addresses broaden fetches media from (BROADEN_MEDIA_HOSTS).

Task data is written by whoever can import into Label Studio, so a URL in it must not make
broaden reach into the network it runs in. Label Studio's own host is always allowed (the admin
named it). Any other host must be on the allow-list, and an address that is private, loopback,
link-local or otherwise not public is refused unless the admin named that host or network. The
address is checked on the socket broaden actually connects to, after DNS, for every hop, so a
name that resolves (or re-resolves) to an internal address is refused too.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
import typing
from dataclasses import dataclass

import httpcore
import httpx

from backend.errors import MediaError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(entry: str) -> Network | None:
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None


def _public(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class HostPolicy:
    """BROADEN_MEDIA_HOSTS: comma-separated host names ("media.example.com"), wildcards
    ("*.s3.amazonaws.com"), addresses or networks ("10.1.2.0/24"), or "*" for any public host."""

    trusted: tuple[str, int] | None = None  # Label Studio's host and port: any path, any address
    names: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()
    any_public: bool = False

    @classmethod
    def parse(cls, spec: str, trusted: tuple[str, int] | None = None) -> HostPolicy:
        entries = [e.strip().lower() for e in spec.split(",") if e.strip()]
        networks = tuple(n for e in entries if (n := _network(e)) is not None)
        names = tuple(e.rstrip(".") for e in entries if e != "*" and _network(e) is None)
        return cls(trusted, names, networks, "*" in entries)

    def _named(self, host: str) -> bool:
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.names)

    def allows(self, host: str, port: int, *, from_label_studio: bool = False) -> bool:
        """May a URL on this host be requested at all? (Its address is checked on connect.)
        `from_label_studio`: its storage proxy redirected here (a presigned cloud URL), so any
        public host will do."""
        host = host.lower().rstrip(".")
        if (host, port) == self.trusted or self._named(host):
            return True
        ip = _network(host)
        if ip is not None and any(ip.subnet_of(n) for n in self.networks if n.version == ip.version):
            return True
        return self.any_public or from_label_studio

    def check_address(self, host: str, port: int, ip: Address) -> None:
        """Refuse a connection to a non-public address the admin did not name."""
        host = host.lower().rstrip(".")
        if (host, port) == self.trusted or self._named(host) or any(ip in n for n in self.networks):
            return
        if not _public(ip):
            raise MediaError(
                f"{host} resolves to {ip}, a private or local address; "
                "add the host or its network to BROADEN_MEDIA_HOSTS to allow it"
            )


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves the name itself, checks every address, then connects to the checked one
    (so the address checked is the address used, even if DNS answers differently next time)."""

    def __init__(self, policy: HostPolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        for ip in addresses:
            self._policy.check_address(host, port, ip)
        last: Exception | None = None
        for ip in addresses:
            try:
                return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as e:
                last = e
        raise last or httpcore.ConnectError(f"no address for {host}")


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the address check on every new connection. Environment proxies
    are not used: through a proxy, the address connected to would be the proxy's."""

    def __init__(self, policy: HostPolicy) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=_GuardedBackend(policy)
        )
