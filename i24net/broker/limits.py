"""Packet size caps the brokers enforce, derived from the protocol's own limits.

An agency publishes envelopes (at most ``MAX_ENVELOPE`` bytes), receipts, gap requests and
presence, all far smaller; the router publishes deliveries (an envelope and its stamp) and the
signed directory (at most ``MAX_DIRECTORY`` + 256 bytes). A packet is its payload plus the
topic (at most 65,535 bytes with its length), a packet id and the fixed header, so a
headroom of 64 KiB over the largest payload admits every legitimate packet. What is larger is
refused by the broker before it is read in full (docs/protocol.md 6.4).
"""

from __future__ import annotations

from i24net.core.directory import MAX_DIRECTORY
from i24net.core.wire import MAX_ENVELOPE

__all__ = ["AGENCY_MAX_PACKET", "CONNECT_MAX_PACKET", "PACKET_HEADROOM", "ROUTER_MAX_PACKET"]

PACKET_HEADROOM = 64 * 1024
"""Topic, packet id and headers on top of the largest payload."""

AGENCY_MAX_PACKET = MAX_ENVELOPE + PACKET_HEADROOM
"""1,572,864 bytes: the largest MQTT packet an agency account may send."""

ROUTER_MAX_PACKET = MAX_DIRECTORY + PACKET_HEADROOM
"""8,454,144 bytes: the largest MQTT packet the router account may send (the directory)."""

CONNECT_MAX_PACKET = 5 * (2 + 65_535) + 10
"""327,695 bytes: the largest valid MQTT 3.1.1 CONNECT (a fixed part of 10 bytes and five
length-prefixed fields: client id, will topic, will message, username, password); the most a
client that has not logged in can make the embedded broker read."""
