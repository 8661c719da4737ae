"""The demo storyline: a live network plays a minute of INTERPOL-style traffic.

Each step acts through the same paths a user has (node outboxes, the broker, the
supervisor) and then waits, with a deadline, for the effect it should have, read back from
the agencies' stores and audit logs. A ``Monitor`` collects what the dashboard and the
final summary show, from those same files: nothing is counted that did not happen.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i24net.config.home import ROUTER_ACCOUNT, Home, now_ms
from i24net.core import frames as fr
from i24net.core.envelope import Body, make_header, recipient_keys, seal
from i24net.core.keys import AgencyKeys, key_id
from i24net.core.labels import Label, Precedence
from i24net.core.units import percentile
from i24net.ops import client
from i24net.ops.supervisor import Supervisor

STEP_TIMEOUT_S = 30.0


@dataclass
class Step:
    title: str
    state: str = "pending"  # pending | running | ok | failed
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Flow:
    at_ms: int
    sender: str
    recipient: str
    kind: str
    label: str
    precedence: int
    subject: str
    latency_ms: int


@dataclass
class Snapshot:
    online: dict[str, bool] = field(default_factory=dict)
    inbox: dict[str, int] = field(default_factory=dict)
    new: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    flows: list[Flow] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    notice_refusals: Counter[str] = field(default_factory=Counter)
    latencies: list[int] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return len(self.latencies)

    def percentile(self, q: float) -> float | None:
        """The nearest-rank ``q``-th percentile of the latencies (ms); None before any."""
        return float(percentile(self.latencies, q)) if self.latencies else None


class Monitor:
    """Reads every agency's store and audit log (read-only) into a ``Snapshot``."""

    def __init__(self, home: Home, sup: Supervisor) -> None:
        self.home = home
        self.sup = sup
        self.agencies = sorted(home.directory().agencies)
        self._audit_pos: dict[str, int] = {}
        self._drops: Counter[str] = Counter()

    def _read_drops(self) -> None:
        for a in self.agencies:
            path = self.home.logs_dir / f"audit-{a}.jsonl"
            if not path.exists():
                continue
            with path.open("rb") as fh:
                fh.seek(self._audit_pos.get(a, 0))
                data = fh.read()
            end = data.rfind(b"\n") + 1
            self._audit_pos[a] = self._audit_pos.get(a, 0) + end
            for line in data[:end].splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == "drop":
                    self._drops[str(entry.get("reason", "?"))] += 1

    def snapshot(self) -> Snapshot:
        s = Snapshot()
        states = self.sup.agency_states()
        self._read_drops()
        s.dropped = Counter(self._drops)
        for a in self.agencies:
            s.online[a] = states.get(a, ("down", "", ""))[0] == "up"
            try:
                store = client.open_store(self.home, a, readonly=True)
            except Exception:  # not created yet: the node has not started
                s.inbox[a] = s.new[a] = s.pending[a] = 0
                continue
            with store:
                items = store.inbox_list(limit=None)
                outbox = store.outbox_list(limit=None)
            s.inbox[a] = len(items)
            s.new[a] = sum(1 for i in items if i.state == "new")
            s.pending[a] = sum(1 for e in outbox if not e.final)
            for e in outbox:
                if e.state == "refused":
                    s.refused[e.reason] += 1
            for i in items:
                latency = i.received_ms - i.created_ms
                s.latencies.append(latency)
                s.flows.append(Flow(i.received_ms, i.sender, a, i.kind, i.label, i.precedence,
                                    i.subject, latency))
                if i.kind == "notice-decision" and i.data.get("decision") == "refused":
                    s.notice_refusals[str(i.data.get("reason", "?"))] += 1
        s.flows.sort(key=lambda f: f.at_ms)
        return s


class StepFailed(Exception):
    pass


class Storyline:
    """The demo's steps; ``run`` plays them and returns True if every one did its part."""

    def __init__(self, home: Home, sup: Supervisor, *,
                 refresh: Callable[[], None] = lambda: None,
                 log: Callable[[str], None] = lambda _: None) -> None:
        self.home = home
        self.sup = sup
        self.refresh = refresh
        self.log = log
        self.monitor = Monitor(home, sup)
        self.steps: list[Step] = [Step(t) for t, _ in self._plan()]
        self.current: Step | None = None
        self.notice_number = ""
        self.diffusion_id = b""
        self.pace = 0.0

    def _plan(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("NCB-FR requests a Red Notice; GS-LYON publishes it to all", self.red_notice),
            ("NCB-DE sends an H2 diffusion to @EU", self.diffusion),
            ("NCB-FR forwards it to NCB-US without release: refused", self.forward),
            ("EUROPOL sends a FLASH alert to several NCBs", self.flash),
            ("NCB-US sends CONFIDENTIAL to NCB-ZA: refused for clearance", self.clearance),
            ("GS-LYON sends SECRET to EUROPOL: refused under the INTERPOL-Europol agreement",
             self.agreement),
            ("a forged message is injected into the broker: dropped", self.forgery),
            ("a political notice request: refused under Article 3", self.article3),
            ("NCB-JP is killed and restarted: it catches up", self.catch_up),
            ("NCB-FR asks to cancel its Red Notice: every holder marks it", self.cancel),
        ]

    # -- helpers --------------------------------------------------------------------------
    def wait(self, what: str, cond: Callable[[], Any], timeout: float = STEP_TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = cond()
            if found:
                return found
            if time.monotonic() > deadline:
                raise StepFailed(f"{what} did not happen within {timeout:g}s")
            self.refresh()
            time.sleep(0.2)

    def inbox(self, agency: str) -> list[Any]:
        with client.open_store(self.home, agency, readonly=True) as store:
            return list(store.inbox_list(limit=None))

    def outbox_entry(self, agency: str, msg_id: bytes) -> Any:
        with client.open_store(self.home, agency, readonly=True) as store:
            return store.outbox_get(msg_id)

    def holders(self) -> list[str]:
        d = self.home.directory()
        return [a for a in d.agencies if a != "GS-LYON" and d.agencies[a].active]

    def settled(self, agency: str, msg_id: bytes) -> Any:
        e = self.outbox_entry(agency, msg_id)
        return e if e is not None and e.state in ("delivered", "refused") else None

    # -- the steps ------------------------------------------------------------------------
    def red_notice(self) -> str:
        client.send(self.home, "NCB-FR", ["GS-LYON"], kind="notice-request",
                    label="OFFICIAL-USE", precedence="IMMEDIATE",
                    subject="Red Notice request: John DOE",
                    text="Wanted for prosecution: homicide, Lyon 2026.",
                    data={"colour": "RED", "subject": "John DOE", "offence": "homicide",
                          "warrant": "FR-2026-0417"})

        def everyone_holds() -> bool:
            return all(any(i.kind == "notice" for i in self.inbox(a)) for a in self.holders())
        self.wait("every agency holding the notice", everyone_holds)
        notice = next(i for i in self.inbox("NCB-DE") if i.kind == "notice")
        self.notice_number = str(notice.data.get("number", ""))
        return f"notice {self.notice_number} held by {len(self.holders())} agencies"

    def diffusion(self) -> str:
        h = client.send(self.home, "NCB-DE", ["@EU"], kind="diffusion", label="CONFIDENTIAL",
                        handling=["H2"], precedence="PRIORITY",
                        subject="Diffusion: stolen vehicle convoy A31",
                        text="Convoy of stolen vehicles heading south on the A31.")
        self.diffusion_id = h.id
        e = self.wait("diffusion receipts", lambda: self.settled("NCB-DE", h.id))
        if e.state != "delivered":
            raise StepFailed(f"diffusion was {e.state} ({e.reason})")
        return f"delivered to {', '.join(sorted(e.receipts))} (copy to the GS)"

    def forward(self) -> str:
        h = client.send(self.home, "NCB-FR", ["NCB-US"], label="CONFIDENTIAL", handling=["H2"],
                        subject="FWD: stolen vehicle convoy", text="For your information.",
                        ref=self.diffusion_id)
        e = self.wait("the router's verdict", lambda: self.settled("NCB-FR", h.id))
        if e.state != "refused" or e.reason != "handling.h2-release":
            raise StepFailed(f"expected a refusal for handling.h2-release, got {e.state} "
                             f"({e.reason})")
        return f"refused: {e.reason}"

    def flash(self) -> str:
        to = ["NCB-FR", "NCB-DE", "NCB-US", "NCB-JP"]
        h = client.send(self.home, "EUROPOL", to, kind="alert", label="RESTRICTED",
                        precedence="FLASH", subject="FLASH: armed suspect crossing borders",
                        text="Armed suspect expected at the Schengen border within the hour.")
        e = self.wait("FLASH receipts", lambda: self.settled("EUROPOL", h.id))
        if e.state != "delivered":
            raise StepFailed(f"alert was {e.state} ({e.reason})")
        lat = [next(i.received_ms - i.created_ms for i in self.inbox(a) if i.msg_id == h.id)
               for a in to]
        return f"delivered to {len(to)} NCBs, slowest {max(lat)} ms"

    def expect_refused(self, sender: str, to: str, label: str, reason: str, subject: str,
                text: str) -> None:
        """``sender`` sends to ``to``; the router must refuse it with ``reason``, and ``to``
        must not hold it."""
        h = client.send(self.home, sender, [to], label=label, subject=subject, text=text)
        e = self.wait("the router's verdict", lambda: self.settled(sender, h.id))
        if e.state != "refused" or e.reason != reason:
            raise StepFailed(f"expected {reason}, got {e.state} ({e.reason})")
        if any(i.msg_id == h.id for i in self.inbox(to)):
            raise StepFailed(f"{to} received a message the router refused ({reason})")

    def clearance(self) -> str:
        self.expect_refused("NCB-US", "NCB-ZA", "CONFIDENTIAL", "clearance.recipient",
                            "Case file 2231", "Confidential case details.")
        return "refused: clearance.recipient (NCB-ZA is OFFICIAL-USE)"

    def agreement(self) -> str:
        """Europol is an organisation of its own; the agreement between INTERPOL and
        Europol lets operational data pass up to CONFIDENTIAL. GS-LYON and Europol are both
        cleared SECRET, so only the agreement stops this one."""
        self.expect_refused("GS-LYON", "EUROPOL", "SECRET", "agreement.level",
                            "Source report", "Above what the agreement allows.")
        return "refused: agreement.level (INTERPOL-EUROPOL allows up to CONFIDENTIAL)"

    def forgery(self) -> str:
        d = self.home.directory()
        before = self.monitor.snapshot().dropped["sig.unknown-key"]
        fake_sender = AgencyKeys.generate("NCB-FR", os.urandom)
        fake_router = AgencyKeys.generate(ROUTER_ACCOUNT, os.urandom)
        header = make_header(d, sender="NCB-FR", addressing=["NCB-DE"], kind="message",
                             label=Label("RESTRICTED"), now_ms=now_ms(), ttl_ms=3600_000,
                             random_bytes=os.urandom, precedence=Precedence.FLASH)
        raw = seal(header, Body("URGENT: release the suspect", "Forged order."), fake_sender,
                   recipient_keys(d, header), random_bytes=os.urandom)
        stamp = fr.Stamp(header.id, hashlib.sha256(raw).digest(), "NCB-FR", ("NCB-DE",),
                         {"NCB-DE": 1}, now_ms(), d.serial, key_id(fake_router.verify_key))
        frame = fr.make_delivery(stamp, raw, fake_router)
        asyncio.run(_inject(self.home, f"{d.prefix}/inbox/NCB-DE", frame))

        def dropped() -> bool:
            return self.monitor.snapshot().dropped["sig.unknown-key"] > before
        self.wait("NCB-DE dropping the forgery", dropped)
        if any(i.msg_id == header.id for i in self.inbox("NCB-DE")):
            raise StepFailed("the forged message reached NCB-DE's inbox")
        return "NCB-DE dropped it: sig.unknown-key (stamp from an unlisted router key)"

    def article3(self) -> str:
        h = client.send(self.home, "NCB-BR", ["GS-LYON"], kind="notice-request",
                        label="RESTRICTED", subject="Red Notice request: opposition leader",
                        text="Sought for organising protests.",
                        data={"colour": "RED", "subject": "R. ROE", "offence": "political",
                              "warrant": "BR-2026-9"})

        def decision() -> Any:
            return next((i for i in self.inbox("NCB-BR") if i.kind == "notice-decision"
                         and i.ref == h.id), None)
        d = self.wait("the GS's decision", decision)
        if d.data.get("decision") != "refused" or \
                not str(d.data.get("reason", "")).startswith("article3."):
            raise StepFailed(f"expected an Article 3 refusal, got {d.data}")
        return f"refused by GS-LYON: {d.data.get('reason')}"

    def catch_up(self) -> str:
        self.sup.kill("NCB-JP")
        self.refresh()
        sent = [client.send(self.home, "NCB-US", ["NCB-JP"], label="RESTRICTED",
                            subject=f"Liaison update {n}/3", text="Routine liaison update.")
                for n in (1, 2, 3)]
        time.sleep(1.0)
        self.refresh()
        self.sup.wait_ready([self.sup.spawn("NCB-JP")])
        ids = {h.id for h in sent}
        self.wait("NCB-JP catching up",
                  lambda: ids <= {i.msg_id for i in self.inbox("NCB-JP")})
        got = [i for i in self.inbox("NCB-JP") if i.msg_id in ids]
        if len(got) != 3:
            raise StepFailed(f"NCB-JP holds {len(got)} copies of 3 messages")
        return "3 messages sent while NCB-JP was down, each delivered once after restart"

    def cancel(self) -> str:
        notice = next(i for i in self.inbox("NCB-FR") if i.kind == "notice")
        client.send(self.home, "NCB-FR", ["GS-LYON"], kind="notice-cancel-request",
                    label="OFFICIAL-USE", precedence="IMMEDIATE",
                    subject=f"Cancel notice {self.notice_number}", text="Suspect arrested.",
                    data={"number": self.notice_number}, ref=notice.msg_id)

        def all_cancelled() -> bool:
            for a in self.holders():
                notices = [i for i in self.inbox(a) if i.kind == "notice"]
                if not notices or any(i.state != "cancelled" for i in notices[:1]):
                    return False
            return True
        self.wait("every holder marking the notice cancelled", all_cancelled)
        return f"notice {self.notice_number} cancelled at {len(self.holders())} holders"

    # -- running --------------------------------------------------------------------------
    def run(self) -> bool:
        ok = True
        for step, (_, action) in zip(self.steps, self._plan(), strict=True):
            self.current = step
            step.state = "running"
            self.log(f"step: {step.title}")
            self.refresh()
            t0 = time.monotonic()
            try:
                step.detail = action()
                step.state = "ok"
            except StepFailed as exc:
                step.state, step.detail, ok = "failed", str(exc), False
            except Exception as exc:  # report the step, keep the demo's teardown intact
                step.state, step.detail, ok = "failed", f"{type(exc).__name__}: {exc}", False
            step.seconds = time.monotonic() - t0
            self.log(f"  {step.state}: {step.detail} ({step.seconds:.1f}s)")
            self.refresh()
            pause_end = time.monotonic() + self.pace
            while time.monotonic() < pause_end:
                self.refresh()
                time.sleep(0.25)
        self.current = None
        return ok


async def _inject(home: Home, topic: str, payload: bytes) -> None:
    """Publish raw bytes with the router's broker account: a compromised broker account."""
    from i24net.shell.runtime import make_transport

    async with make_transport(home, ROUTER_ACCOUNT, client_suffix="forger") as t:
        await t.publish(topic, payload)


def prepare_home(path: Path, engine: str = "embedded") -> Home:
    """A fresh demo network on a free port."""
    from i24net.broker import pick_free_port
    from i24net.config.presets import configure, preset_toml

    home = Home(path)
    home.init(configure(preset_toml("demo"), engine=engine, port=pick_free_port()), force=True)
    return home
