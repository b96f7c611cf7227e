"""Ports shopctl hands to a process it starts next are taken below the kernel's ephemeral
range, where no other process's outgoing connection can take them first."""

from __future__ import annotations

import socket

from shopctl import ports


def test_handed_out_ports_are_free_and_below_the_ephemeral_range():
    low = int(ports.EPHEMERAL_RANGE_FILE.read_text().split()[0])
    chosen = {ports.port_to_hand_out() for _ in range(50)}
    assert len(chosen) > 40  # spread, not one port handed to every caller
    for port in chosen:
        assert 10000 <= port < low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_without_room_below_the_range_the_kernel_picks(tmp_path, monkeypatch):
    fake = tmp_path / "range"
    fake.write_text("1024\t60999\n")  # a range that leaves nothing below it
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", fake)
    port = ports.port_to_hand_out()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
