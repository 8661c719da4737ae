"""The scripting API of the simulator (see the package docstring for a tour).

Theory of operation: ``Simulation`` is an ``Engine`` (the machines, the wire, the faults)
plus the verbs a script uses. Each verb checks its arguments at once - a bad agency id,
label or precedence raises ``ValueError`` or an ``I24Error`` while the script is being
written - and schedules the action at its virtual time ``at`` (seconds since the start).
When the run reaches it, the action goes through the same paths a person has: a message is
built with ``make_header`` from the sender node's own directory and submitted to its node
machine; a notice request, a cancellation or a forward is an ordinary message with the data
the GS desk reads; the task force's review and deletion orders call the GS's ``NoticeDesk``.
What goes wrong then (the node is down, nobody to address) is recorded in the history as a
``send-error`` and on the returned ``Sent`` handle, never raised.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from i24net.config.presets import preset_toml, synthetic_toml
from i24net.core.cooperation import DEFAULT_OPERATION_MS, Operation
from i24net.core.directory import Directory
from i24net.core.envelope import (
    KINDS,
    Body,
    Header,
    exposure,
    make_header,
    recipient_keys,
    seal,
)
from i24net.core.errors import I24Error
from i24net.core.events import NodeEvent
from i24net.core.keys import AgencyKeys, key_id
from i24net.core.labels import (
    TLP,
    ClassificationScale,
    Evaluation,
    HandlingCodes,
    Label,
    Precedence,
)
from i24net.core.lifecycle import REASON_CANCELLED, NoticeDesk
from i24net.core.netspec import NetworkSpec, parse_spec
from i24net.core.node import InboxItem, NodeMachine, OutboxEntry
from i24net.core.policy import Release, complete_addressing
from i24net.sim import history as hs
from i24net.sim.engine import ROUTER, Engine, Host, as_list
from i24net.sim.keyring import SimKeys
from i24net.sim.scheduler import seconds_to_us
from i24net.sim.stores import SimNodeStore


@dataclass
class Sent:
    """A handle on a scripted message. ``msg_id`` is filled in when the send happens (in
    virtual time); ``error`` holds the reason code if the sender could not build it."""

    at: float
    sender: str
    kind: str
    origin: str = "api"
    msg_id: str | None = None
    error: str | None = None
    detail: str = ""

    @property
    def sent(self) -> bool:
        return self.msg_id is not None



class Simulation(Engine):
    """A simulated i24net network. Script it in virtual seconds, then ``run``.

    Build with ``from_preset``, ``from_toml``, ``synthetic`` or ``Simulation(spec, ...)``,
    with the keywords ``seed`` (default 0: every key, id, nonce and random draw derives from
    it), ``start_ms`` (the machines' clock at virtual time 0), ``auto_review`` (the GS desk
    publishes a clean notice request at once; False leaves it for ``review``) and
    ``keep_bodies`` (False forgets inbox texts and sent envelopes once they are no longer
    needed: long benchmarks; ``forward`` and ``cancel_notice`` need the bodies) and
    ``rate_limit`` (the router's per-sender ``RateLimit``; None turns it off; by default the
    router machine's own default).

    Every scripted action takes ``at`` (virtual seconds since the start) and happens when
    the run reaches it; arguments are checked when the action is scripted (``ValueError``
    or an ``I24Error``), and what goes wrong in virtual time is recorded in the history.
    """

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: NetworkSpec, *, max_skew_seconds: int | None = None,
                  **kw: Any) -> Simulation:
        if max_skew_seconds is not None:
            spec = replace(spec, max_skew_seconds=int(max_skew_seconds))
        return cls(spec, **kw)

    @classmethod
    def from_toml(cls, text: str, **kw: Any) -> Simulation:
        """A network from ``network.toml`` text. ``max_skew_seconds`` overrides the spec's
        clock-skew bound; other keywords go to ``Simulation``."""
        return cls.from_spec(parse_spec(tomllib.loads(text)), **kw)

    @classmethod
    def from_preset(cls, name: str, **kw: Any) -> Simulation:
        """A built-in network: ``demo`` (8 agencies) or ``interpol`` (198)."""
        return cls.from_toml(preset_toml(name), **kw)

    @classmethod
    def synthetic(cls, n_agencies: int, *, network_seed: int = 0, **kw: Any) -> Simulation:
        """A synthetic network of ``n_agencies`` (``presets.synthetic_toml``)."""
        return cls.from_toml(synthetic_toml(n_agencies, seed=network_seed), **kw)

    # -- observation -----------------------------------------------------------------------

    @property
    def agencies(self) -> list[str]:
        return list(self.hosts)

    def node(self, agency: str) -> NodeMachine | None:
        """The agency's node machine (None while it is crashed)."""
        return self._host(agency).machine

    def store(self, agency: str) -> SimNodeStore:
        return self._host(agency).store

    def inbox(self, agency: str) -> list[InboxItem]:
        return list(self._host(agency).store.inbox.values())

    def outbox(self, agency: str) -> list[OutboxEntry]:
        return list(self._host(agency).store.outbox.values())

    def state(self, sent: Sent | str) -> str:
        """The outbox state of a message at its sender: ``queued``, ``accepted``,
        ``delivered`` (every receipt in), ``refused`` or ``expired``; ``unsent`` before it
        is sent, ``error`` if it could not be, ``unknown`` for a forgery (the real sender's
        outbox never held it)."""
        mid = sent.msg_id if isinstance(sent, Sent) else sent
        sender = sent.sender if isinstance(sent, Sent) else self.messages[sent].sender
        if mid is None:
            return "error" if isinstance(sent, Sent) and sent.error else "unsent"
        e = self._host(sender).store.outbox.get(bytes.fromhex(mid))
        return e.state if e else "unknown"

    def holders(self, sent: Sent | str) -> list[str]:
        """The agencies whose inbox holds the message."""
        mid = sent.msg_id if isinstance(sent, Sent) else sent
        if mid is None:
            return []
        key = bytes.fromhex(mid)
        return [a for a, h in self.hosts.items() if key in h.store.inbox]

    @property
    def desk(self) -> NoticeDesk | None:
        """The notice authority's desk (None if it is crashed or there is none)."""
        for h in self.hosts.values():
            if h.desk is not None:
                return h.desk
        return None

    def notice_authority(self) -> str:
        found = self.directory.authorities("notice-authority")
        if not found:
            raise ValueError("this network has no notice authority")
        return found[0]

    # -- scripting: messages ---------------------------------------------------------------

    def send(self, at: float, sender: str, to: str | Sequence[str], *, kind: str = "message",
             label: str = "UNCLASSIFIED", precedence: str = "ROUTINE", subject: str = "",
             text: str = "", data: dict[str, Any] | None = None,
             handling: Sequence[str] = (), h3_text: str = "", tlp: str | None = None,
             evaluation: str | None = None, ref: Sent | str | bytes | None = None,
             release: bytes | None = None, ttl: float | None = None) -> Sent:
        """Send a message from ``sender``'s node at ``at``: addressed to ``to`` (agency ids
        and ``@GROUP``s; a diffusion gains its GS copy as the CLI adds it), sealed, queued,
        retried until every receipt arrives or it expires (``ttl`` seconds, default the
        spec's ``default_ttl_hours``)."""
        self._host(sender)
        spec = self._message_spec(kind, to, label, precedence, handling, h3_text, tlp,
                                  evaluation, subject or f"{kind} from {sender}", text, data,
                                  ttl)
        h = Sent(at, sender, kind)
        self._at(at, self._do_send, h, spec, ref, release)
        return h

    def forge(self, at: float, sender: str, to: str | Sequence[str], **kw: Any) -> Sent:
        """An attacker holding ``sender``'s stolen key (see ``compromise``) sends through
        ``sender``'s submit topic, as if it had the broker password too. Same keywords as
        ``send``; never retried. Nothing is sent if no key was stolen by then."""
        self._host(sender)
        spec = self._message_spec(
            kw.pop("kind", "message"), to, kw.pop("label", "UNCLASSIFIED"),
            kw.pop("precedence", "ROUTINE"), kw.pop("handling", ()), kw.pop("h3_text", ""),
            kw.pop("tlp", None), kw.pop("evaluation", None),
            kw.pop("subject", "") or f"message from {sender}", kw.pop("text", ""),
            kw.pop("data", None), kw.pop("ttl", None))
        ref = kw.pop("ref", None)
        if kw:
            raise TypeError(f"unexpected argument(s): {', '.join(sorted(kw))}")
        h = Sent(at, sender, spec["kind"], origin="attacker")
        self._at(at, self._do_forge, h, spec, ref)
        return h

    def forward(self, at: float, sender: str, of: Sent | str, to: str | Sequence[str], *,
                release: bool = False, label: str | None = None,
                handling: Sequence[str] | None = None, precedence: str | None = None,
                subject: str | None = None, text: str | None = None) -> Sent:
        """``sender`` passes on a message it holds (``of``) to ``to``: the body is copied
        from its inbox, label and handling codes inherited unless given, and the forward
        refers to the original (so the router applies the source's handling codes).
        ``release=True`` attaches the source's signed release for the new recipients, as if
        ``sender`` had asked the source for permission (H2)."""
        self._host(sender)
        if label is not None:
            self._check_label(label)
        if precedence is not None:
            Precedence.parse(precedence)
        if handling is not None:
            HandlingCodes.parse(handling)
        h = Sent(at, sender, "message")
        self._at(at, self._do_forward, h, of, as_list(to), release, label, handling,
                 precedence, subject, text)
        return h

    def notice_request(self, at: float, requester: str, *, colour: str = "RED",
                       subject: str, offence: str = "", warrant: str = "",
                       label: str = "OFFICIAL-USE", precedence: str = "IMMEDIATE",
                       text: str = "", fields: dict[str, str] | None = None,
                       handling: Sequence[str] = (), h3_text: str = "") -> Sent:
        """``requester`` asks the notice authority (the GS) to publish a notice. With
        ``auto_review`` (the default) the GS screens it (completeness, Article 3) and
        publishes or refuses at once; otherwise it waits for ``review``."""
        data = {"colour": colour, "subject": subject, "offence": offence,
                "warrant": warrant, **(fields or {})}
        return self.send(at, requester, [self.notice_authority()], kind="notice-request",
                         label=label, precedence=precedence,
                         subject=f"{colour.upper()} Notice request: {subject}"[:256],
                         text=text or f"Request for a {colour.upper()} notice: {subject}",
                         data=data, handling=handling, h3_text=h3_text)

    def cancel_notice(self, at: float, requester: str, request: Sent | str, *,
                      reason: str = "", label: str | None = None,
                      precedence: str = "IMMEDIATE") -> Sent:
        """``requester`` asks the GS to cancel the notice published for ``request`` (or to
        withdraw the request if it is not published yet). The notice number and id are
        read from the requester's own inbox (the GS's decision), as a person would."""
        self._host(requester)
        h = Sent(at, requester, "notice-cancel-request")
        self._at(at, self._do_cancel_notice, h, request, reason, label, precedence)
        return h

    def review(self, at: float, request: Sent | str, *, approve: bool = True,
               reason: str = "notice.refused") -> None:
        """The GS task force decides on a request left under review (``auto_review=False``)."""
        self._at(at, self._do_review, request, approve, reason)

    def order_deletion(self, at: float, diffusion: Sent | str, *,
                       reason: str = "diffusion.non-compliant") -> None:
        """The GS finds a diffusion non-compliant and orders every recipient to delete it."""
        self._at(at, self._do_order_deletion, diffusion, reason)

    def authority_cancel(self, at: float, request: Sent | str, *,
                         reason: str = REASON_CANCELLED) -> None:
        """The notice authority itself cancels the notice published for ``request`` (or
        withdraws the request if it is not decided yet): every holder is told, and the
        requester if it holds no copy. ``cancel_notice`` is the requester asking for it."""
        self._at(at, self._do_authority_cancel, request, reason)

    def at(self, at: float, fn: Callable[[Simulation], Any]) -> None:
        """Call ``fn(sim)`` at virtual time ``at`` (anything the API does not cover)."""
        self._at(at, fn, self)

    # -- scripting: faults and keys --------------------------------------------------------

    def partition(self, at: float, agencies: str | Iterable[str]) -> None:
        """Cut agencies (ids or ``@GROUP``s) from the broker until ``heal``: what they send
        is lost (their outboxes retry), what is sent to them waits at the broker."""
        agencies = as_list(agencies)
        self._resolve(agencies)
        self._at(at, self._do_partition, agencies, True)

    def heal(self, at: float, agencies: str | Iterable[str] | None = None) -> None:
        """Reconnect partitioned agencies (all of them if None)."""
        agencies = as_list(agencies) if agencies is not None else None
        if agencies is not None:
            self._resolve(agencies)
        self._at(at, self._do_partition, agencies, False)

    def crash(self, at: float, who: str) -> None:
        """Crash ``"router"``, ``"broker"`` or an agency's node (memory lost, store kept)."""
        self._check_who(who)
        self._at(at, self._do_crash, who)

    def restart(self, at: float, who: str) -> None:
        """Restart what ``crash`` stopped: a new machine over the same store."""
        self._check_who(who)
        self._at(at, self._do_restart, who)

    def compromise(self, at: float, agency: str) -> None:
        """An attacker steals the private keys ``agency`` holds at ``at`` (then see
        ``forge``). The attacker has also recorded the traffic to and from ``agency``; the
        history's ``exposure`` event says which of it the stolen keys open."""
        self._host(agency)
        self._watched.add(agency)
        self._at(at, self._do_compromise, agency)

    def rotate_prekeys(self, at: float, agencies: Iterable[str] | None = None) -> None:
        """The authority issues a version listing a new prekey for each of ``agencies``
        (default: every active agency); each node keeps its old prekey for the directory's
        grace period, then erases it (docs/protocol.md 2.6)."""
        names = None if agencies is None else list(agencies)
        for a in names or ():
            self._host(a)
        self._at(at, self._do_rotate_prekeys, names)

    def revoke(self, at: float, agency: str) -> None:
        """The authority issues a directory version revoking ``agency``."""
        self._host(agency)
        self._at(at, self._do_revoke, agency)

    def create_operation(self, at: float, name: str, lead: str, members: Iterable[str], *,
                         until: float | None = None, level: str | None = None,
                         title: str = "") -> None:
        """The authority issues a version running joint operation ``name``: its caveat and
        group granted to ``lead`` and ``members`` (ids or @groups, expanded then) until
        ``until`` seconds of virtual time (default: 30 days after ``at``), at ``level``
        (default: the lead's clearance)."""
        self._host(lead)
        self._planned_caveats.add(name)
        self._at(at, self._do_create_operation, name, lead, list(members),
                 at + DEFAULT_OPERATION_MS / 1000 if until is None else until, level,
                 title or name)

    def change_operation(self, at: float, name: str, *, add: Iterable[str] = (),
                         remove: Iterable[str] = ()) -> None:
        """The authority issues a version where ``add`` joined operation ``name`` and
        ``remove`` left it (ids or @groups)."""
        joining, leaving = list(add), list(remove)
        self._at(at, self._do_amend, "operation-add" if joining else "operation-remove", name,
                 lambda d, now: d.change_operation(
                     name, now, add=sorted(self._resolve(joining)) if joining else (),
                     remove=sorted(self._resolve(leaving)) if leaving else ()))

    def close_operation(self, at: float, name: str) -> None:
        """The authority issues a version closing operation ``name``."""
        self._at(at, self._do_amend, "operation-close", name,
                 lambda d, now: d.close_operation(name, now))

    def end_agreement(self, at: float, agreement_id: str) -> None:
        """The authority issues a version in which agreement ``agreement_id`` has ended
        (its ``until`` is now)."""
        self._at(at, self._do_amend, "agreement-expire", agreement_id,
                 lambda d, now: d.end_agreement(agreement_id, now, now))

    def rotate(self, at: float, agency: str) -> None:
        """The authority issues a version with new keys for ``agency``; its node switches
        to the new private keys when that version reaches it."""
        self._host(agency)
        self._at(at, self._do_rotate, agency)

    def skew(self, at: float, agency: str, seconds: float) -> None:
        """Set the clock offset of an agency's node (or ``"router"``) to ``seconds``."""
        if agency != ROUTER:
            self._resolve([agency])
        self._at(at, self._do_skew, agency, round(seconds * 1000))

    # -- running ---------------------------------------------------------------------------

    def run(self, until: float | None = None, *,
            progress: Callable[[float], Any] | None = None, step: float = 1.0,
            max_events: int | None = None) -> hs.History:
        """Run virtual time up to ``until`` seconds (until nothing is left to do if None);
        may be called again to continue. Returns the history so far.

        ``progress(now)`` is called after each ``step`` virtual seconds that saw events
        (stretches without events are skipped), e.g. to move a progress bar.
        ``max_events`` stops early after that many scheduler events (a safety net).
        """
        until_us = None if until is None else seconds_to_us(until)
        if until_us is not None and until_us < self.clock.now_us:
            raise ValueError(f"until={until} is before the current time {self.now:g}s")
        if progress is None:
            self.clock.run(until_us, max_events=max_events)
        else:
            step_us = max(1, seconds_to_us(step))
            left = max_events
            while (nxt := self.clock.next_time()) is not None and (
                    until_us is None or nxt <= until_us) and (left is None or left > 0):
                target = nxt + step_us if until_us is None else min(nxt + step_us, until_us)
                n = self.clock.run(target, max_events=left)
                left = None if left is None else left - n
                progress(self.clock.now)
            if until_us is not None and (left is None or left > 0):
                self.clock.run(until_us, max_events=0)
        self.history.end = self.clock.now
        return self.history

    # -- internals: building and submitting ------------------------------------------------

    def _check_label(self, marking: str) -> Label:
        """``marking`` as a label of this network, the caveats of the joint operations
        scheduled so far included (they exist from their ``create_operation`` on)."""
        lab = Label.parse(marking)
        scale = self.directory.scale
        ClassificationScale(scale.levels, scale.caveats | self._planned_caveats).validate(lab)
        return lab

    def _message_spec(self, kind: str, to: str | Sequence[str], label: str, precedence: str,
                      handling: Sequence[str], h3_text: str, tlp: str | None,
                      evaluation: str | None, subject: str, text: str,
                      data: dict[str, Any] | None, ttl: float | None) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        lab = self._check_label(label)
        ttl_ms = round((ttl if ttl is not None else self.spec.default_ttl_hours * 3600) * 1000)
        if ttl_ms <= 0:
            raise ValueError("ttl must be positive")
        spec: dict[str, Any] = {
            "kind": kind, "to": as_list(to), "label": lab,
            "precedence": Precedence.parse(precedence),
            "handling": HandlingCodes.parse(handling, h3_text),
            "tlp": TLP.parse(tlp) if tlp else None,
            "evaluation": Evaluation.parse(evaluation) if evaluation else None,
            "body": Body(subject[:256], text, dict(data or {})), "ttl_ms": ttl_ms}
        spec["body"].encode()  # refuse now what could never be sealed
        return spec

    def _submit(self, handle: Sent, host: Host, header: Header, body: Body) -> None:
        m = host.machine
        assert m is not None
        try:
            raw, _ = m.submit(header, body, self._now_ms(host))
        except I24Error as exc:
            self._send_error(handle, exc.reason, exc.message)
            return
        if self._watched and (header.sender in self._watched
                              or not self._watched.isdisjoint(header.recipients)):
            self._captured[header.id_hex] = raw
        handle.msg_id = header.id_hex
        self._record_send(host, header, body.subject, handle.origin)
        self._flush(host)
        self._plan_wake(host)

    def _send_error(self, handle: Sent, reason: str, detail: str) -> None:
        handle.error, handle.detail = reason, detail
        self._record(hs.SendError(self._t(), handle.sender, reason, detail))

    def _ref(self, ref: Sent | str | bytes | None) -> bytes | None:
        if ref is None or isinstance(ref, bytes):
            return ref
        if isinstance(ref, Sent):
            if ref.msg_id is None:
                raise I24Error(f"the referenced {ref.kind} from {ref.sender} was not sent "
                               f"(scheduled at {ref.at:g}s: {ref.error or 'not yet'})",
                               reason="ref.unsent")
            return bytes.fromhex(ref.msg_id)
        return bytes.fromhex(ref)

    def _live(self, handle: Sent) -> Host | None:
        host = self.hosts[handle.sender]
        if host.machine is None:
            self._send_error(handle, "node.down", f"{handle.sender}'s node is not running")
            return None
        return host

    def _header(self, host: Host, d: Directory, spec: dict[str, Any],
                ref: bytes | None, release: bytes | None, *, sender: str) -> Header:
        return make_header(
            d, sender=sender,
            addressing=complete_addressing(spec["kind"], list(spec["to"]), sender, d),
            kind=spec["kind"], label=spec["label"], now_ms=self._now_ms(host),
            ttl_ms=spec["ttl_ms"], random_bytes=self.rng.randbytes,
            precedence=spec["precedence"], handling=spec["handling"], tlp=spec["tlp"],
            evaluation=spec["evaluation"], ref=ref, release=release)

    def _do_send(self, handle: Sent, spec: dict[str, Any], ref: Any,
                 release: bytes | None) -> None:
        host = self._live(handle)
        if host is None:
            return
        assert host.machine is not None
        try:
            header = self._header(host, host.machine.directory, spec, self._ref(ref),
                                  release, sender=host.agency)
        except I24Error as exc:
            self._send_error(handle, exc.reason, exc.message)
            return
        self._submit(handle, host, header, spec["body"])

    def _do_forward(self, handle: Sent, of: Sent | str, to: list[str], release: bool,
                    label: str | None, handling: Sequence[str] | None,
                    precedence: str | None, subject: str | None, text: str | None) -> None:
        host = self._live(handle)
        if host is None:
            return
        assert host.machine is not None
        try:
            orig_id = self._ref(of)
            assert orig_id is not None
            item = host.store.inbox_get(orig_id)
            orig = self.messages.get(orig_id.hex())
            if item is None or orig is None:
                raise I24Error(f"{host.agency} holds no message {orig_id.hex()[:12]} to "
                               "forward", reason="forward.not-held")
            d = host.machine.directory
            codes = HandlingCodes.parse(orig.handling if handling is None else handling)
            signed_release = None
            if release:
                allowed = d.expand(to, host.agency)
                src = self.hosts[orig.sender].keys
                signed_release = Release(orig_id, orig.sender, allowed,
                                         self._now_ms(host)).sign(src)
            spec = {"kind": "message", "to": to,
                    "label": Label.parse(label or orig.label),
                    "precedence": Precedence.parse(precedence or orig.precedence),
                    "handling": codes, "tlp": TLP.parse(orig.tlp) if orig.tlp else None,
                    "evaluation": None,
                    "ttl_ms": self.spec.default_ttl_hours * 3_600_000}
            body = Body((subject or f"FWD: {item.subject}")[:256],
                        item.text if text is None else text, dict(item.data))
            header = self._header(host, d, spec, orig_id, signed_release,
                                  sender=host.agency)
        except I24Error as exc:
            self._send_error(handle, exc.reason, exc.message)
            return
        self._submit(handle, host, header, body)

    def _do_cancel_notice(self, handle: Sent, request: Sent | str, reason: str,
                          label: str | None, precedence: str) -> None:
        host = self._live(handle)
        if host is None:
            return
        assert host.machine is not None
        try:
            rid_b = self._ref(request)
            assert rid_b is not None
            rid = rid_b.hex()
            number, ref = "", rid_b
            for item in host.store.inbox.values():  # the GS's decision names the notice
                if item.kind == "notice-decision" and item.data.get("request") == rid \
                        and item.data.get("notice"):
                    number = str(item.data.get("number", ""))
                    ref = bytes.fromhex(str(item.data["notice"]))
            orig = self.messages.get(rid)
            lab = Label.parse(label or (orig.label if orig else "OFFICIAL-USE"))
            spec = {"kind": "notice-cancel-request", "to": [self.notice_authority()],
                    "label": lab, "precedence": Precedence.parse(precedence),
                    "handling": HandlingCodes.parse(orig.handling if orig else ()),
                    "tlp": None, "evaluation": None, "ttl_ms": 7 * 86_400_000}
            data = {"number": number, **({"reason": reason} if reason else {})}
            body = Body(f"Cancel notice {number or rid[:12]}", "Please cancel.", data)
            header = self._header(host, host.machine.directory, spec, ref, None,
                                  sender=host.agency)
        except I24Error as exc:
            self._send_error(handle, exc.reason, exc.message)
            return
        self._submit(handle, host, header, body)

    # -- internals: the notice desk --------------------------------------------------------

    def _gs(self) -> Host | None:
        for h in self.hosts.values():
            if h.desk is not None and h.machine is not None:
                return h
        return None

    def _at_desk(self, error: str,
                 act: Callable[[NoticeDesk, NodeMachine, int], list[NodeEvent]]) -> None:
        """Run a task-force action on the GS's desk now, as ``i24net notice`` does beside the
        running daemon, and move what it sends. A failure is recorded as a desk event named
        ``error`` (the action stays undone), never raised: it happens in virtual time."""
        gs = self._gs()
        if gs is None or gs.desk is None or gs.machine is None:
            self._record(hs.Desk(self._t(), "", error, reason="node.down",
                                 detail="the notice authority's node is not running"))
            return
        try:
            events = act(gs.desk, gs.machine, self._now_ms(gs))
        except I24Error as exc:
            self._record(hs.Desk(self._t(), gs.agency, error, reason=exc.reason,
                                 detail=exc.message))
            return
        self._node_events(gs, events, "")
        self._flush(gs)
        self._plan_wake(gs)

    def _ref_hex(self, ref: Sent | str) -> str:
        found = self._ref(ref)
        assert found is not None
        return found.hex()

    def _do_review(self, request: Sent | str, approve: bool, reason: str) -> None:
        def act(desk: NoticeDesk, m: NodeMachine, now: int) -> list[NodeEvent]:
            rid = self._ref_hex(request)
            return desk.approve(m, rid, now) if approve else desk.refuse(m, rid, now, reason)
        self._at_desk("approve-error" if approve else "refuse-error", act)

    def _do_order_deletion(self, diffusion: Sent | str, reason: str) -> None:
        self._at_desk("deletion-error", lambda desk, m, now: desk.order_deletion(
            m, bytes.fromhex(self._ref_hex(diffusion)), now, reason))

    def _do_authority_cancel(self, request: Sent | str, reason: str) -> None:
        self._at_desk("cancel-error", lambda desk, m, now: desk.cancel(
            m, self._ref_hex(request), now, reason))

    # -- internals: the attacker and the authority -----------------------------------------

    def _do_compromise(self, agency: str) -> None:
        host = self.hosts[agency]
        # what the agency holds now: its running node's keys (retired prekeys past their
        # grace already erased), else the stored ones
        keys = host.machine.keys if host.machine is not None else host.keys
        self._stolen[agency] = keys
        self._record_exposure(agency, keys)
        if agency not in self._attackers:
            att = Host(agency, keys, self.directory, name=f"attacker:{agency}")
            att.link = self.conditions.default
            att.machine = None
            self._attackers[agency] = att
        self._record(hs.Inject(self._t(), "compromise", agency,
                               f"key {key_id(keys.verify_key).hex()} stolen"))

    def _record_exposure(self, agency: str, keys: AgencyKeys) -> None:
        readable, shut = exposure(self._captured, agency, keys, self.directory,
                                  self.history.directories.values())
        self._record(hs.Exposure(self._t(), agency, tuple(readable), tuple(shut),
                                 tuple(shut.values())))

    def _do_rotate_prekeys(self, agencies: list[str] | None) -> None:
        d = self.directory
        names = agencies if agencies is not None else [a for a, r in d.agencies.items()
                                                       if r.active]
        now = self._router_now()
        listed = {}
        for a in names:
            host = self.hosts[a]
            base = host.pending_keys[-1][1] if host.pending_keys else host.keys
            new = base.with_new_prekey(self.rng.randbytes(32), now).erase_prekeys(
                now, d.prekey_grace_ms)  # the stored copy forgets what is past its grace
            pk = new.public()
            listed[a] = (pk.prekey, pk.prekey_sig)
            host.pending_keys.append((d.serial + 1, new))
        nd = d.rotate_prekeys(listed, now)
        self._issue(nd, "rotate-prekeys", ",".join(names) if agencies else "@ALL")

    def _do_forge(self, handle: Sent, spec: dict[str, Any], ref: Any) -> None:
        keys = self._stolen.get(handle.sender)
        att = self._attackers.get(handle.sender)
        if keys is None or att is None:
            self._send_error(handle, "attacker.no-key",
                             f"no key of {handle.sender} has been stolen")
            return
        d = self.directory  # the retained directory topic: anyone may read it
        try:
            header = self._header(att, d, spec, self._ref(ref), None, sender=handle.sender)
            header = replace(header, key_id=key_id(keys.verify_key))
            raw = seal(header, spec["body"], keys, recipient_keys(d, header),
                       random_bytes=self.rng.randbytes, cache=self._attacker_cache)
        except I24Error as exc:
            self._send_error(handle, exc.reason, exc.message)
            return
        handle.msg_id = header.id_hex
        self._record_send(att, header, spec["body"].subject, "attacker")
        self._up(att, raw)

    def _do_revoke(self, agency: str) -> None:
        try:
            nd = self.directory.revoke(agency, self._router_now())
        except I24Error as exc:
            self._record(hs.Inject(self._t(), "revoke", agency, f"failed: {exc.message}"))
            return
        self._issue(nd, "revoke", agency)

    def _do_create_operation(self, name: str, lead: str, members: list[str], until: float,
                             level: str | None, title: str) -> None:
        now = self._router_now()
        try:
            everyone = tuple(sorted({lead, *self._resolve(members)}))
            op = Operation(name, title, lead, everyone, self.start_ms + round(until * 1000),
                           level or self.directory.agency(lead).clearance.level,
                           created_ms=now)
            nd = self.directory.create_operation(op, now)
        except (I24Error, ValueError) as exc:
            self._record(hs.Inject(self._t(), "operation-create", name,
                                   f"failed: {getattr(exc, 'message', exc)}"))
            return
        self._issue(nd, "operation-create", name)

    def _do_amend(self, action: str, target: str,
                  change: Callable[[Directory, int], Directory]) -> None:
        try:
            nd = change(self.directory, self._router_now())
        except (I24Error, ValueError) as exc:
            self._record(hs.Inject(self._t(), action, target,
                                   f"failed: {getattr(exc, 'message', exc)}"))
            return
        self._issue(nd, action, target)

    def _do_rotate(self, agency: str) -> None:
        new = SimKeys.draw(agency, self.rng, now_ms=self._router_now())
        nd = self.directory.rotate(agency, new.public(), self._router_now())
        self.hosts[agency].pending_keys.append((nd.serial, new))
        self._issue(nd, "rotate", agency)
