"""Transports: how i24net daemons reach a broker.

:class:`MqttTransport` talks MQTT 3.1.1 to a real broker (Mosquitto, amqtt);
:class:`MemoryTransport` and :class:`MemoryBroker` do the same in process for tests and the
simulator. Both satisfy the :class:`Transport` protocol.
"""

from i24net.transport.base import Delivery, Transport, TransportError, Will
from i24net.transport.memory import Connected, MemoryBroker, MemoryTransport
from i24net.transport.mqtt import MqttTransport, backoff_delay
from i24net.transport.topics import topic_matches, validate_filter, validate_topic

__all__ = [
    "Connected",
    "Delivery",
    "MemoryBroker",
    "MemoryTransport",
    "MqttTransport",
    "Transport",
    "TransportError",
    "Will",
    "backoff_delay",
    "topic_matches",
    "validate_filter",
    "validate_topic",
]
