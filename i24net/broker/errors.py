"""Errors raised by the broker layer.

They join the package's error tree under ``TransportError``: a broker that cannot be
configured or started is, to the rest of i24net, a transport that is not there. Each message
names the file, option or command a person should look at next.
"""

from __future__ import annotations

from i24net.core.errors import TransportError

__all__ = [
    "BrokerConfigError",
    "BrokerError",
    "BrokerNotInstalledError",
    "BrokerStartError",
]


class BrokerError(TransportError):
    """The MQTT broker could not be configured, started or stopped."""

    default_reason = "broker"


class BrokerConfigError(BrokerError):
    """An account, topic, port or file given to the broker layer is invalid; fix the value named."""

    default_reason = "broker.config"


class BrokerStartError(BrokerError):
    """The broker process exited or never accepted connections; its log file says why."""

    default_reason = "broker.start"


class BrokerNotInstalledError(BrokerStartError):
    """The broker program is not installed; install it (``apt-get install mosquitto``) or use
    the embedded engine."""

    default_reason = "broker.not-installed"
