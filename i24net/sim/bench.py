"""A throughput benchmark of the simulator: virtual messages per wall-clock second.

Run ``python -m i24net.sim.bench --agencies 198 --messages 20000`` (198 = the ``interpol``
preset; any other number is a ``synthetic`` network of that size). The workload is the same
for every network size so rates compare: 1 KB bodies, each message to one recipient drawn at
random, except one in ``--broadcast-every`` sent to ten explicit recipients; label
OFFICIAL-USE (every agency of every preset is cleared for it), ROUTINE with one in twenty
FLASH. Messages start at a steady virtual rate and the run continues until every receipt is
in. Every check runs: seal, sign, route, stamp, verify, decrypt, receipt.

The crypto floor printed beside the rate is what the signatures alone cost per message on
this machine (measured on the spot): a unicast costs four signatures (envelope, stamp,
report, receipt) and six verifications (envelope at the router and at the recipient, stamp,
receipt at the router and at the sender, report), whatever the simulator does around them.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from typing import Any

import nacl.signing

from i24net.sim.simulation import Simulation


@dataclass
class BenchResult:
    agencies: int
    messages: int
    deliveries: int
    wall_s: float
    cpu_s: float
    virtual_s: float
    setup_s: float
    floor_us: float

    @property
    def rate(self) -> float:
        return self.messages / self.wall_s

    def line(self) -> str:
        per = self.wall_s / self.messages * 1e6
        return (f"{self.agencies:>5} agencies: {self.messages} messages ({self.deliveries} "
                f"deliveries) in {self.wall_s:.1f} s wall for {self.virtual_s:.0f} s virtual: "
                f"{self.rate:,.0f} msg/s ({per:.0f} us/msg wall, "
                f"{self.cpu_s / self.messages * 1e6:.0f} us/msg CPU; signature floor "
                f"{self.floor_us:.0f} us/msg); setup {self.setup_s:.1f} s")


def crypto_floor_us(samples: int = 400) -> float:
    """4 signatures + 6 verifications of a ~1.3 KB message, in microseconds."""
    sk = nacl.signing.SigningKey(bytes(32))
    vk = sk.verify_key
    msg = bytes(1300)
    sig = sk.sign(msg).signature
    t = time.perf_counter()
    for _ in range(samples):
        sk.sign(msg)
    sign = (time.perf_counter() - t) / samples
    t = time.perf_counter()
    for _ in range(samples):
        vk.verify(msg, sig)
    verify = (time.perf_counter() - t) / samples
    return (4 * sign + 6 * verify) * 1e6


def build(agencies: int, seed: int) -> Simulation:
    if agencies == 198:
        return Simulation.from_preset("interpol", seed=seed, keep_bodies=False)
    return Simulation.synthetic(agencies, seed=seed, keep_bodies=False)


def schedule(sim: Simulation, messages: int, *, rate: float, broadcast_every: int,
             seed: int) -> None:
    """Chain the sends: each one schedules the next, so the heap stays small."""
    pick = random.Random(seed)  # the workload's own draws; the network's are the sim's
    ids = sim.agencies
    text = "x" * 1000
    gap = 1.0 / rate
    left = [messages]

    def one(s: Simulation) -> None:
        n = messages - left[0]
        sender = pick.choice(ids)
        if broadcast_every and n % broadcast_every == broadcast_every - 1:
            to = pick.sample([a for a in ids if a != sender], 10)
        else:
            to = [_other(pick, ids, sender)]
        s.send(s.now, sender, to, label="OFFICIAL-USE",
               precedence="FLASH" if n % 20 == 0 else "ROUTINE",
               subject=f"bench {n}", text=text, ttl=3600)
        left[0] -= 1
        if left[0]:
            s.at(s.now + gap, one)
    sim.at(0.0, one)


def _other(pick: random.Random, ids: list[str], sender: str) -> str:
    while True:
        r = pick.choice(ids)
        if r != sender:
            return r


def run(agencies: int, messages: int, *, rate: float = 200.0, broadcast_every: int = 100,
        seed: int = 1, profile: str | None = None) -> BenchResult:
    t0 = time.perf_counter()
    sim = build(agencies, seed)
    setup = time.perf_counter() - t0
    sim.conditions.latency(20.0, 5.0)
    schedule(sim, messages, rate=rate, broadcast_every=broadcast_every, seed=seed)
    t1 = time.perf_counter()
    c1 = time.process_time()
    if profile:
        import cProfile

        cProfile.runctx("sim.run()", globals(), {"sim": sim}, profile)
    else:
        sim.run()
    wall = time.perf_counter() - t1
    cpu = time.process_time() - c1
    h = sim.history
    return BenchResult(len(sim.agencies), messages, h.delivered(), wall, cpu, sim.now, setup,
                       crypto_floor_us())


def main(argv: list[str] | None = None) -> Any:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agencies", type=int, nargs="+", default=[198, 3000])
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=200.0, help="virtual messages per second")
    p.add_argument("--broadcast-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", help="write a cProfile dump here (one network size)")
    a = p.parse_args(argv)
    results = []
    for n in a.agencies:
        r = run(n, a.messages, rate=a.rate, broadcast_every=a.broadcast_every, seed=a.seed,
                profile=a.profile)
        print(r.line(), flush=True)
        results.append(r)
    if len(results) >= 2:
        print(f"rate ratio {results[-1].agencies}/{results[0].agencies}: "
              f"{results[-1].rate / results[0].rate:.2f}")
    return results


if __name__ == "__main__":
    main()
