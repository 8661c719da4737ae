"""The error tree: one root, a few branches, each carrying a stable reason code.

Theory of operation: every failure a user or an operator can meet is an ``I24Error``. The
``reason`` is a stable dotted string (``wire.truncated``, ``sig.invalid``,
``clearance.recipient``...) documented in ``docs/protocol.md`` and used by counters, audit
entries and exercise expectations; the message is written for a person and says what to do.
Library exceptions (msgpack, PyNaCl, sqlite3, aiomqtt) are converted to these once, at the
boundary where they are raised, with ``raise ... from exc``.
"""

from __future__ import annotations


class I24Error(Exception):
    """Something went wrong in i24net; the message says what and, where it can, what to do."""

    default_reason = "error"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        agency: str | None = None,
        msg_id: str | None = None,
        agencies: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.agency = agency
        self.msg_id = msg_id
        self.agencies = agencies

    def __str__(self) -> str:
        return self.message


class ConfigError(I24Error):
    """A network spec, a key file or an option is wrong; fix the file or the option named."""

    default_reason = "config"


class WireFormatError(I24Error):
    """The bytes are not a well-formed i24net object (truncated, oversized, wrong types)."""

    default_reason = "wire.malformed"


class CryptoError(I24Error):
    """A signature did not verify or a ciphertext did not decrypt: the data was altered or
    was not meant for this key."""

    default_reason = "crypto"


class NotRecipientError(CryptoError):
    """This agency is not among the recipients of the message; it cannot be opened here."""

    default_reason = "not-recipient"


class DirectoryError(I24Error):
    """The directory is unsigned, rolled back, or does not know the agency named."""

    default_reason = "directory"


class PolicyError(I24Error):
    """The routing policy refuses the message; ``reason`` and ``agencies`` say why and who."""

    default_reason = "policy"


class StateError(I24Error):
    """An illegal transition was asked of a state machine (e.g. cancelling a refused notice)."""

    default_reason = "state.illegal"


class TransportError(I24Error):
    """The broker could not be reached or refused the connection or the operation."""

    default_reason = "transport"


class WaitTimeout(I24Error):
    """An operation did not complete in the time allowed."""

    default_reason = "timeout"
