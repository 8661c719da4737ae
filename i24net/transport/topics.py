"""MQTT 3.1.1 topic names, topic filters and the rule that matches one against the other.

Theory of operation: a topic name is what a message is published to (no wildcards); a topic
filter is what a client subscribes with, where ``+`` stands for exactly one level and ``#``,
which must be the whole last level, for any number of levels, including none (so ``a/#``
also matches ``a``). Levels are separated by ``/`` and may be empty, so ``a//b`` has three
levels and ``/x`` starts with an empty one. Topics that begin with ``$`` (``$SYS/...``) are
reserved for the broker: a filter whose first level is a wildcard does not match them
(MQTT 3.1.1 section 4.7.2), which keeps ``#`` subscribers out of broker internals.

The in-memory broker routes with :func:`topic_matches`; the MQTT transport validates with
:func:`validate_topic` and :func:`validate_filter` before anything reaches paho, so both
transports refuse the same inputs with the same error. Pure functions, no I/O.
"""

from __future__ import annotations

from i24net.core.errors import TransportError

__all__ = ["MAX_TOPIC_BYTES", "topic_matches", "validate_filter", "validate_topic"]

#: MQTT strings carry a two-byte length prefix, so no topic or filter can exceed this.
MAX_TOPIC_BYTES = 65_535

_SEPARATOR = "/"
_SINGLE = "+"
_MULTI = "#"


def topic_matches(filter_: str, topic: str) -> bool:
    """Whether a message published to ``topic`` is delivered to a subscription ``filter_``.

    Both arguments are taken as valid (see :func:`validate_filter` and
    :func:`validate_topic`); checking them again on every routed message would cost the
    broker's hot path for inputs that were already checked at the edge.
    """
    if topic.startswith("$") and filter_[:1] in (_SINGLE, _MULTI):
        return False
    filter_levels = filter_.split(_SEPARATOR)
    topic_levels = topic.split(_SEPARATOR)
    for index, level in enumerate(filter_levels):
        # '#' is checked before the length so that 'a/#' matches the parent 'a'.
        if level == _MULTI:
            return True
        if index >= len(topic_levels):
            return False
        if level != _SINGLE and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


def validate_topic(topic: str) -> str:
    """Return ``topic`` if it is a valid topic name to publish to, else raise.

    Raises :class:`TransportError` with reason ``transport.topic``: a wildcard in a
    published topic is a programming error that paho would otherwise report as a bare
    ``ValueError`` deep inside a background publish.
    """
    _check_common(topic, "topic")
    if _SINGLE in topic or _MULTI in topic:
        raise TransportError(
            f"cannot publish to {topic!r}: wildcards '+' and '#' are only allowed in "
            "subscription filters",
            reason="transport.topic",
        )
    return topic


def validate_filter(filter_: str) -> str:
    """Return ``filter_`` if it is a valid subscription filter, else raise.

    ``+`` and ``#`` must each occupy a whole level and ``#`` must be the last level;
    brokers disconnect clients that send anything else, which would look like a network
    fault rather than the caller's mistake.
    """
    _check_common(filter_, "filter")
    levels = filter_.split(_SEPARATOR)
    for index, level in enumerate(levels):
        if level in (_SINGLE, _MULTI):
            if level == _MULTI and index != len(levels) - 1:
                raise TransportError(
                    f"invalid subscription filter {filter_!r}: '#' must be the last level",
                    reason="transport.topic",
                )
            continue
        if _SINGLE in level or _MULTI in level:
            raise TransportError(
                f"invalid subscription filter {filter_!r}: a wildcard must be a whole "
                f"level, not part of {level!r}",
                reason="transport.topic",
            )
    return filter_


def _check_common(value: str, what: str) -> None:
    """Rules shared by names and filters: non-empty, no NUL, valid UTF-8 that fits the
    two-byte length prefix."""
    if not value:
        raise TransportError(f"an MQTT {what} cannot be empty", reason="transport.topic")
    if "\x00" in value:
        raise TransportError(
            f"an MQTT {what} cannot contain the NUL character", reason="transport.topic"
        )
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates cannot go on the wire
        raise TransportError(
            f"an MQTT {what} must be valid UTF-8: {exc.reason}", reason="transport.topic"
        ) from exc
    if size > MAX_TOPIC_BYTES:
        raise TransportError(
            f"an MQTT {what} is at most {MAX_TOPIC_BYTES} bytes of UTF-8; this one is {size}",
            reason="transport.topic",
        )
