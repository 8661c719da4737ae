"""Notice and diffusion procedures, applied by node machines as delivery hooks.

Theory of operation: every node applies withdrawal events to what it holds — a
``notice-cancel`` marks the referenced notice cancelled, a ``deletion-order`` deletes the
referenced diffusion, a ``notice-update`` marks it updated — idempotently and in any order
(a cancel that arrives before its notice is remembered and applied when the notice lands).

The node of the notice authority (the GS) also runs the ``NoticeDesk``: a ``notice-request``
is recorded in the ``NoticeRegistry``, screened (completeness, then Article 3), and with
automatic review either refused (a ``notice-decision`` to the requester with the reason) or
published to every agency cleared for its label, with the next notice number. A
``notice-cancel-request`` from the notice's owner withdraws it from every holder. A diffusion
copy is recorded so the GS can later order its deletion (``order_deletion``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from i24net.core.envelope import Body, Header, make_header
from i24net.core.errors import I24Error
from i24net.core.node import InboxItem, NodeEvent, NodeMachine
from i24net.core.notices import NoticeColour, NoticeRegistry, screen_request

DECISION_TTL_MS = 7 * 24 * 3600 * 1000
NOTICE_TTL_MS = 30 * 24 * 3600 * 1000  # the operational copy; retention is the registry's


@dataclass
class Holdings:
    """What a node remembers to apply withdrawals in any order."""

    withdrawn: dict[bytes, str] = field(default_factory=dict)  # msg id -> final state


@dataclass
class NoticeDesk:
    registry: NoticeRegistry
    auto_review: bool = True
    notice_ids: dict[str, bytes] = field(default_factory=dict)  # request id -> notice msg id
    by_notice: dict[bytes, str] = field(default_factory=dict)  # notice msg id -> request id
    diffusions: dict[bytes, tuple[str, ...]] = field(default_factory=dict)


def _send(m: NodeMachine, now_ms: int, *, to: list[str], kind: str, like: Header,
          body: Body, ttl_ms: int, ref: bytes | None) -> NodeEvent:
    header = make_header(m.directory, sender=m.agency, addressing=to, kind=kind,
                         label=like.label, now_ms=now_ms, ttl_ms=ttl_ms,
                         random_bytes=m.random_bytes, precedence=like.precedence,
                         handling=like.handling, ref=ref)
    _, ev = m.submit(header, body, now_ms)
    return ev


def _cleared_audience(m: NodeMachine, h: Header) -> list[str]:
    d = m.directory
    everyone = d.expand(["@ALL"], m.agency)
    cleared = [a for a in everyone if d.scale.dominates(d.agencies[a].clearance, h.label)]
    return ["@ALL"] if cleared == list(everyone) else cleared


def _holder_hook(holdings: Holdings):  # type: ignore[no-untyped-def]
    def hook(m: NodeMachine, item: InboxItem, h: Header, now_ms: int) -> list[NodeEvent]:
        target_state = {"notice-cancel": "cancelled", "deletion-order": "deleted",
                        "notice-update": "updated"}.get(h.kind)
        if target_state and h.ref is not None:
            if target_state != "updated":
                holdings.withdrawn[h.ref] = target_state
            if m.store.inbox_get(h.ref) is not None:
                m.store.inbox_set_state(h.ref, target_state)
            return [NodeEvent(target_state, h.ref.hex(), h.sender, detail=item.subject)]
        if h.id in holdings.withdrawn:  # the withdrawal overtook the item itself
            m.store.inbox_set_state(h.id, holdings.withdrawn[h.id])
            return [NodeEvent(holdings.withdrawn[h.id], h.id_hex, h.sender,
                              detail="withdrawn before it arrived")]
        return []
    return hook


def _desk_hook(desk: NoticeDesk):  # type: ignore[no-untyped-def]
    def hook(m: NodeMachine, item: InboxItem, h: Header, now_ms: int) -> list[NodeEvent]:
        if h.kind == "diffusion":
            desk.diffusions[h.id] = tuple(r for r in h.recipients if r != m.agency)
            return []
        if h.kind == "notice-request":
            return _on_request(desk, m, item, h, now_ms)
        if h.kind == "notice-cancel-request":
            return _on_cancel_request(desk, m, item, h, now_ms)
        return []
    return hook


def _decision(m: NodeMachine, h: Header, now_ms: int, text: str, data: dict[str, str],
              ) -> NodeEvent:
    return _send(m, now_ms, to=[h.sender], kind="notice-decision", like=h,
                 body=Body(text[:256], text, data), ttl_ms=DECISION_TTL_MS, ref=h.id)


def _on_request(desk: NoticeDesk, m: NodeMachine, item: InboxItem, h: Header,
                now_ms: int) -> list[NodeEvent]:
    data = {k: str(v) for k, v in item.data.items()}
    rid = h.id_hex
    try:
        colour = NoticeColour.parse(data.get("colour", "RED"))
        fields = {k: data.get(k, "") for k in ("subject", "offence", "warrant")}
        desk.registry.request(request_id=rid, requester=h.sender, colour=colour,
                              fields=fields, now_ms=now_ms)
    except I24Error as exc:
        return [NodeEvent("notice-refused", rid, h.sender, exc.reason, exc.message),
                _decision(m, h, now_ms, f"Notice request refused: {exc.message}",
                          {"decision": "refused", "reason": exc.reason, "request": rid})]
    flag = screen_request(colour, fields)
    if flag is not None:
        desk.registry.review(rid, approve=False, actor=m.agency, now_ms=now_ms, reason=flag)
        return [NodeEvent("notice-refused", rid, h.sender, flag),
                _decision(m, h, now_ms, f"Notice request refused ({flag})",
                          {"decision": "refused", "reason": flag, "request": rid})]
    if not desk.auto_review:
        desk.registry.submit_for_review(rid, actor=m.agency, now_ms=now_ms)
        return [NodeEvent("notice-review", rid, h.sender, detail="awaiting review")]
    notice = desk.registry.review(rid, approve=True, actor=m.agency, now_ms=now_ms)
    number = notice.number or ""
    audience = _cleared_audience(m, h)
    body = Body(f"{colour.value} NOTICE {number}: {fields['subject']}"[:256],
                f"{colour.purpose}. Offence: {fields['offence']}. Warrant: "
                f"{fields['warrant'] or '-'}. Requested by {h.sender}.",
                {"colour": colour.value, "number": number, "request": rid, **fields})
    ev = _send(m, now_ms, to=audience, kind="notice", like=h, body=body,
               ttl_ms=NOTICE_TTL_MS, ref=h.id)
    notice_id = bytes.fromhex(ev.msg_id)
    desk.notice_ids[rid] = notice_id
    desk.by_notice[notice_id] = rid
    desk.registry.record_sent(rid, m.directory.expand(audience, m.agency))
    return [NodeEvent("notice-published", ev.msg_id, h.sender, detail=number), ev,
            _decision(m, h, now_ms, f"Notice {number} published",
                      {"decision": "published", "number": number, "request": rid,
                       "notice": ev.msg_id})]


def _on_cancel_request(desk: NoticeDesk, m: NodeMachine, item: InboxItem, h: Header,
                       now_ms: int) -> list[NodeEvent]:
    number = str(item.data.get("number", ""))
    try:
        rid = desk.registry.by_number(number).request_id if number else \
            desk.by_notice[h.ref or b""]
        notice = desk.registry.get(rid)
        if notice.requester != h.sender:
            raise I24Error(f"{h.sender} does not own notice {notice.name}",
                           reason="notice.not-owner")
        _, holders = desk.registry.cancel(rid, actor=m.agency, now_ms=now_ms,
                                          reason="notice.cancelled")
    except (I24Error, KeyError) as exc:
        reason = exc.reason if isinstance(exc, I24Error) else "notice.unknown"
        return [NodeEvent("notice-cancel-refused", h.id_hex, h.sender, reason)]
    notice_id = desk.notice_ids[rid]
    to = sorted(holders - {m.agency})
    body = Body(f"CANCELLED: notice {notice.number}"[:256],
                f"Notice {notice.number} is cancelled at the request of {h.sender}.",
                {"number": notice.number or "", "request": rid})
    ev = _send(m, now_ms, to=to, kind="notice-cancel", like=h, body=body,
               ttl_ms=NOTICE_TTL_MS, ref=notice_id)
    return [NodeEvent("notice-cancelled", notice_id.hex(), h.sender, detail=notice.number
                      or ""), ev]


def order_deletion(m: NodeMachine, desk: NoticeDesk, diffusion_id: bytes, like: Header,
                   now_ms: int, reason: str) -> NodeEvent:
    """The GS finds a diffusion non-compliant: tell its recipients to delete it."""
    to = list(desk.diffusions[diffusion_id])
    body = Body("Deletion order", f"Diffusion {diffusion_id.hex()} is non-compliant "
                f"({reason}); delete it.", {"diffusion": diffusion_id.hex(), "reason": reason})
    return _send(m, now_ms, to=to, kind="deletion-order", like=like, body=body,
                 ttl_ms=DECISION_TTL_MS, ref=diffusion_id)


def install_lifecycle(m: NodeMachine, *, auto_review: bool = True) -> NoticeDesk | None:
    """Attach the holder hook to every node, and the notice desk to the notice authority."""
    m.hooks.append(_holder_hook(Holdings()))
    if "notice-authority" in m.directory.agency(m.agency).roles:
        desk = NoticeDesk(NoticeRegistry(m.agency), auto_review)
        m.hooks.append(_desk_hook(desk))
        return desk
    return None
