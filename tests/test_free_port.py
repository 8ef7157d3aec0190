"""Server ports are picked below the kernel's ephemeral range, where no client connection takes them.

Found: a port picked with ``bind(0)`` came from the ephemeral range, the one every
outgoing connection takes its local port from; between the pick and the server's bind a
client connection could take it, and under CI's load one did.
"""

from __future__ import annotations

import socket

import pytest

from engine.runtime import processes


def test_ports_are_free_and_below_the_ephemeral_range() -> None:
    low = processes._ephemeral_low()
    assert low > processes._PORT_FLOOR + 1000, "this host's ephemeral range leaves no room: the test proves nothing"
    for _ in range(20):
        port = processes.free_port()
        assert processes._PORT_FLOOR <= port < low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", processes._PORT_FLOOR))
        held.listen()
        monkeypatch.setattr(processes, "_ephemeral_low", lambda: processes._PORT_FLOOR + 1000)
        picks = iter([processes._PORT_FLOOR, processes._PORT_FLOOR, processes._PORT_FLOOR + 7])
        monkeypatch.setattr(processes.random.SystemRandom, "randrange", lambda self, a, b: next(picks))
        assert processes.free_port() == processes._PORT_FLOOR + 7


def test_a_range_that_leaves_no_room_falls_back_to_the_kernels_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "_ephemeral_low", lambda: processes._PORT_FLOOR + 10)
    port = processes.free_port()
    assert port >= 1024
