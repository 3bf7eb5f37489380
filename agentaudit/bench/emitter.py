"""A separate process that emits at a fixed rate through the SDK, for the end-to-end latency run.

Run as `python -m agentaudit.bench.emitter BOOTSTRAP TOPIC RATE SECONDS`; prints the number
of events the SDK acknowledged on its last line.
"""

from __future__ import annotations

import sys
import time

from agentaudit.bench.workload import payloads
from agentaudit.settings import Settings


def main() -> None:
    bootstrap, topic, rate, seconds = (
        sys.argv[1],
        sys.argv[2],
        float(sys.argv[3]),
        float(sys.argv[4]),
    )
    from agentaudit_sdk import Client

    client = Client.from_settings(
        Settings(
            kafka_bootstrap=bootstrap,
            events_topic=topic,
            data_dir=Settings().data_dir / "bench-emitter",
        ),
        agent_id="bench-agent",
        agent_version="1.0.0",
    )
    work = payloads(int(rate * seconds))
    started = time.monotonic()
    for i, (tenant, kind, payload) in enumerate(work):
        due = started + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing to a fixed rate
        with client.bind(tenant_id=tenant):
            client.emit(kind, payload)
    client.flush(30, delivered=True)
    client.shutdown(10)
    print(client.stats.sent, flush=True)


if __name__ == "__main__":
    main()
