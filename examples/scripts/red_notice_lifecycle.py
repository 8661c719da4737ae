#!/usr/bin/env python3
"""A Red Notice from request to withdrawal, on the INTERPOL network in virtual time.

NCB France asks the General Secretariat for a Red Notice; the GS screens it (completeness,
Article 3) and publishes it to every NCB cleared for its label. Two NCBs are cut off for a
while and catch up when they reconnect. Meanwhile NCB Brazil asks for a notice against an
opposition leader, which Article 3 forbids. An hour later the suspect is arrested, France
asks for cancellation, and the GS withdraws the notice from every holder. The script prints
the time each step took and checks the run with the information-flow checker.

    python examples/scripts/red_notice_lifecycle.py [--seed N]
"""

from __future__ import annotations

import argparse
import statistics

from i24net.sim import (
    NoticeCancelled,
    NoticePublished,
    NoticeRefused,
    Simulation,
    Withdrawn,
    flow_report,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=7)
    seed = p.parse_args().seed

    sim = Simulation.from_preset("interpol", seed=seed)
    sim.conditions.latency(60, jitter_ms=30)  # one-way, every NCB to the broker
    sim.conditions.group("@AFRICA", latency_ms=250, jitter_ms=80, loss=0.02)

    request = sim.notice_request(
        10.0, "NCB-FR", colour="RED", subject="John DOE", offence="homicide",
        warrant="FR-2026-0417", label="OFFICIAL-USE", precedence="IMMEDIATE",
        text="Wanted for prosecution: homicide, Lyon 2026.")
    sim.partition(5.0, ["NCB-BR", "NCB-NZ"])
    sim.heal(900.0, ["NCB-BR", "NCB-NZ"])
    sim.notice_request(20.0, "NCB-BR", subject="R. ROE", offence="political",
                       warrant="BR-2026-9", label="RESTRICTED")
    sim.cancel_notice(3600.0, "NCB-FR", request, reason="notice.arrested")
    h = sim.run(until=3600.0 + 1800.0)

    [published] = h.of(NoticePublished)
    holders = sim.messages[published.msg_id].recipients
    got = {e.recipient: e.t for e in h.where(event="deliver", msg_id=published.msg_id)}
    gone = {e.holder: e.t for e in h.of(Withdrawn) if e.msg_id == published.msg_id}
    [cancelled] = h.of(NoticeCancelled)
    print(f"Red Notice {published.number} requested by {published.requester} at "
          f"{request.at:g}s, published at {published.t:.3f}s")
    print(f"  held by {len(got)}/{len(holders)} agencies; median arrival "
          f"{statistics.median(got.values()) - published.t:.3f}s after publication, "
          f"last {max(got.values()) - published.t:.1f}s (two NCBs were cut off until 900s)")
    print(f"  cancelled at {cancelled.t:.3f}s ({cancelled.reason}); withdrawn at "
          f"{len(gone)}/{len(holders)} holders within "
          f"{max(gone.values()) - cancelled.t:.3f}s (time to withdraw)")
    for refused in h.of(NoticeRefused):
        print(f"Request from {refused.requester} refused by the GS: {refused.reason}")
    s = h.summary()
    print(f"Traffic: {s['messages']} messages, {s['delivered']} deliveries, "
          f"{s['retries']} retries, dropped {s['dropped'] or 'nothing'}")
    report = flow_report(h)
    print(f"Information flow: {len(report.violations)} violation(s), "
          f"{len(report.undelivered)} explained non-deliveries")
    for v in report.violations:
        print(f"  {v}")
    return 0 if report.ok and len(gone) == len(holders) else 1


if __name__ == "__main__":
    raise SystemExit(main())
