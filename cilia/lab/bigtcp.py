"""BIG TCP on the lab's pod devices: GSO/GRO packets of up to 192 KiB instead of 64 KiB, for IPv4
(kernel 6.3+) and IPv6, as Cilium's ``enable-ipv4-big-tcp``/``enable-ipv6-big-tcp`` set on its pod
devices (the same 196,608 bytes).

A pod's TCP stack then hands the device a third as many (larger) packets for the same data, so every
per-packet cost on the way (the veth hop, the datapath's program, the redirect) is paid a third as
often. Like Cilium, cilia sets it only with eBPF host routing: a host-routed packet goes from the
source's program straight into the destination's namespace, which takes any size; packets that take
the host's stack (a proxy, a Service, a device outside the lab) are segmented by the kernel where a
device needs it, as for any GSO packet.

iproute2 6.1 and pyroute2 0.9 do not know the IPv4 attributes (``IFLA_GSO_IPV4_MAX_SIZE``), so the
link is changed with one rtnetlink request of our own.
"""

from __future__ import annotations

import functools
import os
import socket
import struct

from cilia.lab import netns

ENV = "CILIA_BIG_TCP"  # "0": pods keep the kernel's 64 KiB limits
BIG_TCP_MAX_SIZE = 196_608  # Cilium's bigTCPGSOMaxSize / bigTCPGROMaxSize
DEFAULT_MAX_SIZE = 65_536  # the kernel's default for every device

# rtnetlink (linux/rtnetlink.h, linux/if_link.h)
_RTM_NEWLINK, _RTM_GETLINK = 16, 18
_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_NLMSG_ERROR = 2
_IFLA_GSO_MAX_SIZE = 41  # IPv6 (and, on kernels before 6.3, every family)
_IFLA_GRO_MAX_SIZE = 58
_IFLA_GSO_IPV4_MAX_SIZE = 63  # kernel 6.3+
_IFLA_GRO_IPV4_MAX_SIZE = 64


def wanted() -> bool:
    """Whether new pods get BIG TCP: on unless ``CILIA_BIG_TCP=0``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache  # a property of the kernel: asked once, not for every device of every pod
def ipv4_supported() -> bool:
    """Whether this kernel has IPv4 BIG TCP (a per-device IPv4 GSO limit, 6.3+): it reports the
    attribute for ``lo``."""
    return _IFLA_GSO_IPV4_MAX_SIZE in _link_attrs(socket.if_nametoindex("lo"))


def _attr(kind: int, value: int) -> bytes:
    return struct.pack("=HHI", 8, kind, value)


def _request(ifindex: int, attrs: bytes, seq: int, kind: int, flags: int) -> bytes:
    ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, ifindex, 0, 0)
    body = ifinfo + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def _exchange(ifindex: int, kind: int, flags: int, attrs: bytes = b"") -> bytes:
    """One rtnetlink request about a device of this thread's namespace; the first reply message."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        seq = int.from_bytes(os.urandom(4), "little") or 1
        s.send(_request(ifindex, attrs, seq, kind, flags))
        reply = s.recv(65536)
    if struct.unpack_from("=I", reply, 8)[0] != seq:
        raise OSError(f"rtnetlink reply out of sequence for device {ifindex}")
    return reply


def _link_attrs(ifindex: int) -> dict[int, bytes]:
    """The device's top-level link attributes (RTM_GETLINK), by number."""
    reply = _exchange(ifindex, _RTM_GETLINK, _NLM_F_REQUEST)
    length, kind = struct.unpack_from("=IH", reply)
    if kind != _RTM_NEWLINK:
        _raise_nack(reply, ifindex)
    attrs, off = {}, 16 + 16  # netlink header, ifinfomsg
    while off + 4 <= length:
        alen, atype = struct.unpack_from("=HH", reply, off)
        if alen < 4:
            break
        attrs[atype & 0x3FFF] = reply[off + 4:off + alen]
        off += (alen + 3) & ~3
    return attrs


def _raise_nack(reply: bytes, ifindex: int) -> None:
    kind = struct.unpack_from("=H", reply, 4)[0]
    if kind != _NLMSG_ERROR:
        raise OSError(f"unexpected rtnetlink reply (type {kind}) for device {ifindex}")
    (errno_neg,) = struct.unpack_from("=i", reply, 16)
    if errno_neg:
        raise OSError(-errno_neg, f"{os.strerror(-errno_neg)}: the GSO/GRO sizes of device {ifindex}")


def _set_link(ifindex: int, attrs: bytes) -> None:
    """One RTM_NEWLINK on an existing device in this thread's namespace; raises OSError on a NACK."""
    reply = _exchange(ifindex, _RTM_NEWLINK, _NLM_F_REQUEST | _NLM_F_ACK, attrs)
    length, kind = struct.unpack_from("=IH", reply)
    if kind != _NLMSG_ERROR or length < 20:
        raise OSError(f"unexpected rtnetlink reply (type {kind}) setting device {ifindex}")
    _raise_nack(reply, ifindex)


def set_max_sizes(ifname: str, size: int = BIG_TCP_MAX_SIZE, namespace: str | None = None) -> None:
    """GSO and GRO limits of the device ``ifname`` (in ``namespace``, else this thread's) for IPv6
    and, where the kernel has them, IPv4: ``BIG_TCP_MAX_SIZE`` turns BIG TCP on, ``DEFAULT_MAX_SIZE``
    off."""
    attrs = _attr(_IFLA_GSO_MAX_SIZE, size) + _attr(_IFLA_GRO_MAX_SIZE, size)
    if ipv4_supported():
        attrs += _attr(_IFLA_GSO_IPV4_MAX_SIZE, size) + _attr(_IFLA_GRO_IPV4_MAX_SIZE, size)
    if namespace is None:
        _set_link(socket.if_nametoindex(ifname), attrs)
        return
    with netns.entered(namespace):  # the name is looked up in the namespace (a socket opened there)
        _set_link(socket.if_nametoindex(ifname), attrs)


_NAMES = {_IFLA_GSO_MAX_SIZE: "gso_max_size", _IFLA_GRO_MAX_SIZE: "gro_max_size",
          _IFLA_GSO_IPV4_MAX_SIZE: "gso_ipv4_max_size", _IFLA_GRO_IPV4_MAX_SIZE: "gro_ipv4_max_size"}


def max_sizes(ifname: str, namespace: str | None = None) -> dict[str, int]:
    """The device's GSO/GRO limits as the kernel reports them (``gso_max_size`` …)."""
    if namespace is None:
        attrs = _link_attrs(socket.if_nametoindex(ifname))
    else:
        with netns.entered(namespace):
            attrs = _link_attrs(socket.if_nametoindex(ifname))
    return {name: struct.unpack("=I", attrs[num][:4])[0] for num, name in _NAMES.items() if num in attrs}
