"""Which `Host` names the server answers: its defence against DNS rebinding.

A web page on `rebind.attacker.example`, once that name resolves to 127.0.0.1, reaches a loopback
server from the browser with its own `Origin`, which matches its own `Host`, so an Origin check alone
lets it in. The server therefore answers only the names it was told it is reached by: `localhost`,
`127.0.0.1` and `[::1]`, the address it is bound to when that is one concrete address, and the names
of `qmcp serve --allowed-host` (QMCP_ALLOWED_HOSTS). Every other Host gets 421, on every route.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..agentframework.errors import InvalidConfigError

if TYPE_CHECKING:
    from mcp.server.transport_security import TransportSecuritySettings

__all__ = ["LOOPBACK_NAMES", "HostAllowlist", "split_host"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_WILDCARDS = ("0.0.0.0", "[::]")


def _name(text: str) -> str:
    """A host name as Host headers spell it: lower case, an IPv6 address in brackets."""
    name = text.strip().lower()
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return name
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


@functools.lru_cache(maxsize=256)
def _allows(entries: frozenset[tuple[str, str | None]], host: str) -> bool:
    """Remembered: every request asks about the same few Host values (parsing one costs ~14 µs)."""
    parsed = split_host(host)
    if parsed is None:
        return False
    name, port = parsed
    return (name, None) in entries or (port is not None and (name, port) in entries)


def split_host(value: str) -> tuple[str, str | None] | None:
    """A `Host` header's (name, port), or None when it is not `name[:port]` (a port is digits only)."""
    value = value.strip()
    if value.startswith("["):
        name, bracket, rest = value.partition("]")
        if not bracket:
            return None
        name += "]"
    elif value.count(":") > 1:  # an unbracketed IPv6 address is no Host value
        return None
    else:
        name, _, port = value.partition(":")
        rest = f":{port}" if ":" in value else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    if not name or any(c in name for c in "/\\@ ?#"):
        return None
    return _name(name), rest[1:] or None


@dataclass(frozen=True)
class HostAllowlist:
    """The names (each with any port, or `name:port` for that port only) this server answers to."""

    entries: frozenset[tuple[str, str | None]]

    @classmethod
    def for_bind(cls, host: str, allowed: tuple[str, ...] = ()) -> HostAllowlist:
        """The loopback names, the bound address unless it is a wildcard, and `allowed`."""
        names = [*LOOPBACK_NAMES, *allowed]
        bound = _name(host)
        if bound not in _WILDCARDS:
            names.append(bound)
        entries = set()
        for name in names:
            parsed = split_host(name)
            if parsed is None:
                raise InvalidConfigError(f"--allowed-host {name!r} is not a host name, nor name:port")
            entries.add(parsed)
        return cls(frozenset(entries))

    def allows(self, host: str | None) -> bool:
        return _allows(self.entries, host or "")

    def names(self) -> list[str]:
        """The entries as they are written (`name`, or `name:port`), sorted."""
        return sorted(f"{name}:{port}" if port else name for name, port in self.entries)

    def mcp_security(self) -> TransportSecuritySettings:
        """The same names for the MCP SDK's own Host and Origin check on `/mcp`."""
        from mcp.server.transport_security import TransportSecuritySettings

        hosts, origins = [], []
        for name, port in self.entries:
            spelled = [f"{name}:{port}"] if port else [name, f"{name}:*"]
            hosts += spelled
            origins += [f"{scheme}://{host}" for scheme in ("http", "https") for host in spelled]
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=sorted(hosts), allowed_origins=sorted(origins)
        )
