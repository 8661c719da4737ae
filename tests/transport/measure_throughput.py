"""Measure MqttTransport throughput through a private Mosquitto on loopback.

Run by hand (pytest does not collect it)::

    .venv/bin/python tests/transport/measure_throughput.py [--messages 5000] [--size 1024]

One publisher gathers all QoS 1 publishes at once (the in-flight window bounds them) and
one subscriber counts arrivals; a run ends when the last message has arrived, so the rate is
end to end (publisher -> broker -> subscriber), not just broker acknowledgements. Prints
every run and the median, as text and as one JSON line for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the sibling harness importable without the test package.
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from mosquitto_harness import MosquittoProcess, find_mosquitto

from i24net.transport import MqttTransport


async def one_run(
    broker: MosquittoProcess, run: int, messages: int, size: int, inflight: int
) -> dict[str, float]:
    topic = f"bench/run{run}"
    payload = bytes(size)
    async with (
        MqttTransport(
            broker.host, broker.port, client_id=f"bench-sub-{run}", clean_session=True
        ) as sub,
        MqttTransport(
            broker.host,
            broker.port,
            client_id=f"bench-pub-{run}",
            clean_session=True,
            max_inflight=inflight,
        ) as pub,
    ):
        await sub.subscribe(topic)
        stream = sub.deliveries()

        async def receive() -> float:
            for _ in range(messages):
                await anext(stream)
            return time.perf_counter()

        receiver = asyncio.create_task(receive(), name="bench-receive")
        start = time.perf_counter()
        await asyncio.gather(*(pub.publish(topic, payload) for _ in range(messages)))
        acked = time.perf_counter()
        done = await asyncio.wait_for(receiver, 120)
    return {
        "end_to_end_msgs_per_s": messages / (done - start),
        "acked_msgs_per_s": messages / (acked - start),
        "seconds": done - start,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024, help="payload bytes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=64, help="max_inflight window")
    args = parser.parse_args()
    binary = find_mosquitto()
    if binary is None:
        print("mosquitto not found (apt-get install mosquitto, or set I24NET_MOSQUITTO)")
        return 2
    with tempfile.TemporaryDirectory() as workdir:
        broker = MosquittoProcess(binary, Path(workdir))
        broker.start()
        try:
            results = []
            for run in range(args.runs):
                result = await one_run(broker, run, args.messages, args.size, args.inflight)
                results.append(result)
                print(
                    f"run {run + 1}: {result['end_to_end_msgs_per_s']:,.0f} msgs/s end to end, "
                    f"{result['acked_msgs_per_s']:,.0f} msgs/s acknowledged "
                    f"({result['seconds']:.2f} s)"
                )
        finally:
            broker.stop()
    median = statistics.median(r["end_to_end_msgs_per_s"] for r in results)
    median_acked = statistics.median(r["acked_msgs_per_s"] for r in results)
    print(
        f"median of {args.runs}: {median:,.0f} msgs/s end to end "
        f"({args.messages} x {args.size} B, QoS 1, max_inflight {args.inflight}, loopback)"
    )
    print(
        json.dumps(
            {
                "messages": args.messages,
                "size": args.size,
                "max_inflight": args.inflight,
                "median_msgs_per_s": round(median),
                "median_acked_msgs_per_s": round(median_acked),
                "runs": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
