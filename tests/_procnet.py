"""Processes and TCP sockets read from /proc: what the loopback-only tests check (Linux only)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from pathlib import Path


def is_loopback(ip: str) -> bool:
    """Whether `ip` (v4, v6 or v4-mapped v6, with or without a zone) is a loopback address."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def descendants(root: int) -> set[int]:
    """`root` and every process below it, from /proc/*/stat."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in out]
        out.update(kids)
        frontier.extend(kids)
    return out


def tcp_sockets(pids: set[int]) -> list[tuple[int, str, str, str]]:
    """(pid, local ip, remote ip, state) of every TCP socket the processes hold (state "0A": listening)."""

    def ip_of(hexaddr: str, v6: bool) -> str:
        raw = bytes.fromhex(hexaddr)
        if not v6:
            return socket.inet_ntop(socket.AF_INET, raw[::-1])
        words = struct.unpack("<4I", raw)
        return socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))

    out = []
    for pid in pids:
        try:
            inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        inodes = {i for i in inodes if i.isdigit()}
        for table, v6 in (("tcp", False), ("tcp6", True)):
            try:
                lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                f = line.split()
                if f[9] in inodes:
                    out.append((pid, ip_of(f[1].split(":")[0], v6), ip_of(f[2].split(":")[0], v6), f[3]))
    return out
