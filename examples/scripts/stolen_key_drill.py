#!/usr/bin/env python3
"""A stolen-key drill: an attacker signs with NCB Brazil's key until the GS revokes it.

At 10 minutes an attacker steals NCB Brazil's private keys and the password of its broker
account, and starts sending forged FLASH orders to NCB United States every 30 seconds. The
real NCB Brazil notices reports and receipts for messages it never sent; the GS revokes its
key at 25 minutes. The drill reports how long the attacker had, how many forgeries got
through, and that nothing signed with the stolen key was accepted after the revocation.

    python examples/scripts/stolen_key_drill.py [--seed N] [--revoke-at SECONDS] [--rotate]
"""

from __future__ import annotations

import argparse

from i24net.sim import Simulation, compromise_report, flow_report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--revoke-at", type=float, default=1500.0)
    p.add_argument("--rotate", action="store_true",
                   help="rotate NCB-BR's keys instead of revoking it")
    a = p.parse_args()

    sim = Simulation.from_preset("interpol", seed=a.seed)
    sim.conditions.latency(50, jitter_ms=20)
    sim.compromise(600.0, "NCB-BR")
    for n, t in enumerate(range(630, 2400, 30)):
        sim.forge(float(t), "NCB-BR", ["NCB-US"], kind="alert", label="RESTRICTED",
                  precedence="FLASH", subject=f"FLASH: release detainee {n}",
                  text="Order to release the detainee held under case BR-2026-41.")
    for t in range(0, 2400, 120):  # the real NCB-BR keeps working
        sim.send(float(t) + 1, "NCB-BR", ["NCB-US"], label="RESTRICTED",
                 subject=f"Liaison update {t // 120}")
    (sim.rotate if a.rotate else sim.revoke)(a.revoke_at, "NCB-BR")
    h = sim.run(until=2700.0)

    [drill] = compromise_report(h)
    suspicious = h.where(event="drop", where="NCB-BR", reason="report.unknown")
    first_signal = min((e.t for e in suspicious), default=None)
    print(f"Key of {drill['agency']} stolen at {drill['stolen_at']:g}s; "
          f"{'rotated' if a.rotate else 'revoked'} at {drill['fixed_at']:g}s "
          f"({drill['time_to_fix']:g}s of exposure)")
    if first_signal is not None:
        print(f"  first sign at NCB-BR (a router report for a message it never sent): "
              f"{first_signal:.3f}s")
    print(f"  forged messages: {drill['forged']}; accepted before the fix: "
          f"{drill['accepted_before_fix']}, after: {drill['accepted_after_fix']}; "
          f"refused: {drill['refused']}; delivered to NCB-US: {drill['deliveries']}")
    s = h.summary()
    print(f"Traffic: {s['messages']} messages, {s['delivered']} deliveries, refused "
          f"{s['refused']}")
    report = flow_report(h)
    print(f"Information flow: {len(report.violations)} violation(s); "
          f"{len(report.undelivered)} undelivered, all explained")
    for u in report.undelivered[:5]:
        print(f"  {u.msg_id[:12]} to {u.recipient}: {u.text}")
    for v in report.violations:
        print(f"  {v}")
    return 0 if report.ok and drill["accepted_after_fix"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
