"""Loopback ports for the node a test starts.

Port 0 would give a port from the kernel's ephemeral range, which any outgoing connection may
take as its local end before the node binds it. Ports below that range never are: the same rule
as the Rust tests' `common::free_addr`, which take 11000..21000 (the compose cluster publishes
from 21051 on).
"""

import itertools
import os
import socket

_FIRST, _END = 10_000, 11_000
_next = itertools.count((os.getpid() * 7919) % (_END - _FIRST))


def free_port():
    for _ in range(_END - _FIRST):
        port = _FIRST + next(_next) % (_END - _FIRST)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_FIRST}..{_END}")
