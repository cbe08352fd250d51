"""Egress policy for communication functions: deny by default, decided on resolved addresses.

Rules (option ``egress_allow``), each optionally with ``:port`` (IPv6 in
brackets: ``[::1]:8080``):

* an address or CIDR — ``127.0.0.1``, ``10.0.0.0/8:443`` — allows connections
  to any address it contains;
* a host name — ``api.example.com`` or ``*.example.com`` — allows that name,
  but only to *public* addresses: a name never grants loopback, private,
  link-local or other special addresses (a DNS answer can point anywhere, so
  trusting it would let anyone who controls the name reach the internal
  network: DNS rebinding). Such addresses need an address rule.

Cloud metadata and link-local addresses (169.254.0.0/16, fe80::/10,
fd00:ec2::254) are allowed only by an address rule *inside* those ranges:
``0.0.0.0/0`` does not open them. The decision (:meth:`EgressPolicy.decide`)
is pure and is applied to the addresses the connection will actually use; the
HTTP function then connects to exactly the checked address, and checks every
redirect again.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PROTECTED: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)
"""Metadata and link-local ranges: open only to an address rule inside them."""


class EgressRuleError(ValueError):
    """An ``egress_allow`` rule is malformed (the message quotes it)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One allow rule: a network or a host-name pattern, and an optional port."""

    text: str
    network: IPNetwork | None
    host_pattern: str | None
    port: int | None

    def port_matches(self, port: int) -> bool:
        return self.port is None or self.port == port


def parse_rule(text: str) -> Rule:
    """Parse one rule; raise :class:`EgressRuleError` naming it if malformed."""
    raw = text.strip()
    if not raw:
        raise EgressRuleError("empty egress rule")
    host, port = raw, None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise EgressRuleError(f"egress rule {text!r}: missing ']'")
        host, rest = raw[1:end], raw[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise EgressRuleError(f"egress rule {text!r}: expected ':port' after ']'")
            port = _port(text, rest[1:])
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
        port = _port(text, port_text)
    try:
        return Rule(raw, ipaddress.ip_network(host, strict=False), None, port)
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    label = name[2:] if name.startswith("*.") else name
    if not label or not all(part and all(c.isalnum() or c == "-" for c in part)
                            for part in label.split(".")):
        raise EgressRuleError(f"egress rule {text!r} is neither an address, a CIDR nor a "
                              "host name (wildcards only as a leading '*.')")
    return Rule(raw, None, name, port)


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise EgressRuleError(f"egress rule {text!r}: port {value!r} is not 1..65535")
    return int(value)


def _is_public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


def _protected(address: IPAddress) -> bool:
    return any(address.version == net.version and address in net for net in PROTECTED)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one destination: allowed, and which rule or why not."""

    allowed: bool
    reason: str


class EgressPolicy:
    """A set of allow rules; everything else is denied."""

    def __init__(self, rules: Iterable[str]) -> None:
        self.rules: tuple[Rule, ...] = tuple(parse_rule(r) for r in rules)

    def __repr__(self) -> str:
        return f"EgressPolicy({[r.text for r in self.rules]!r})"

    def decide(self, host: str, port: int, addresses: Sequence[IPAddress]) -> Decision:
        """May a connection to ``host:port`` go to ``addresses`` (what the host resolved to)?

        Every address must be allowed, since the connection may use any of them.
        """
        if not addresses:
            return Decision(False, f"{host} did not resolve to any address")
        name = host.lower().rstrip(".")
        for address in addresses:
            decision = self._decide_address(name, port, address)
            if not decision.allowed:
                return decision
        return decision

    def _decide_address(self, name: str, port: int, address: IPAddress) -> Decision:
        for rule in self.rules:
            if rule.network is None or not rule.port_matches(port):
                continue
            if address.version != rule.network.version or address not in rule.network:
                continue
            if _protected(address) and not any(
                    rule.network.subnet_of(net) for net in PROTECTED  # type: ignore[arg-type]
                    if net.version == rule.network.version):
                continue  # a broad rule never opens metadata / link-local addresses
            return Decision(True, f"allowed by rule {rule.text!r}")
        for rule in self.rules:
            if rule.host_pattern is None or not rule.port_matches(port):
                continue
            if not fnmatch.fnmatchcase(name, rule.host_pattern):
                continue
            if not _is_public(address):
                return Decision(False, f"rule {rule.text!r} allows the name {name}, but it "
                                       f"resolved to the non-public address {address}; add an "
                                       "address rule to allow it")
            return Decision(True, f"allowed by rule {rule.text!r}")
        if _protected(address):
            return Decision(False, f"{address} is a metadata/link-local address: denied unless "
                                   "an address rule inside 169.254.0.0/16 or fe80::/10 lists it")
        return Decision(False, f"no egress rule allows {address} port {port}"
                               + (f" (host {name})" if name != str(address) else ""))
