"""The faust runtime the stream jobs run in: tuned settings, contained subclasses, a runner.

Stock faust was slow here (2-core box, local broker): it waited (fixed 1 s polls and sleeps,
a 1.5 s fetch long-poll held by idle partitions: ~5k events/s with the event loop idle 80 %)
and spent ~100 µs of CPU per event (four tasks and an `asyncio.wait` per delivery, a loop
turn per event, slow settings read per message, a Monitor booking five counters per
message); even tuned, ~25 µs per record stayed in its per-record delivery, about 7× what
aiokafka costs. The fixes are contained subclasses, one module per layer:

- `consumer`: broker → faust (`FastConsumer`, `BatchMessage` in `batch`, offsets and acks,
  the fetch thread, `FastTransport`);
- `fairness`: one partition's backlog does not hold back another's (`PartitionHolds` in the
  consumer, `RoundRobin` in the stream);
- `stream`: faust's buffer → an agent's body (`BatchingStream.take`/`take_events`,
  `RawSchema`);
- `app`: the app and its settings (`make_app`, `AuditApp` with its declared `batched_topics`
  and `commit_guard`, `source_topic`, `LeanMonitor`, `PromptTableManager`);
- `runner`: run the app in this event loop, stop it within a bound (`running`);
- `watchdog`: notice a partition that stopped being delivered (`StallWatch`; the consumer
  describes and unstalls it: `FastConsumer.describe`/`unstall`).

Each module's docstring lists the faust and broker defects its layer works around. Measured
stage by stage by `agentaudit.bench.faust_measure`; the figures are in the README
("Performance", "Stream jobs").
"""

from stream_jobs.runtime.app import (
    AuditApp,
    LeanMonitor,
    PromptTableManager,
    make_app,
    source_topic,
)
from stream_jobs.runtime.batch import BatchMessage
from stream_jobs.runtime.consumer import (
    FETCH_MAX_WAIT_MS,
    POLL_TIMEOUT,
    FastConsumer,
    FastTransport,
    TunedConsumerThread,
)
from stream_jobs.runtime.runner import STOP_TIMEOUT_S, running
from stream_jobs.runtime.stream import BatchingStream, RawSchema

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "POLL_TIMEOUT",
    "STOP_TIMEOUT_S",
    "AuditApp",
    "BatchMessage",
    "BatchingStream",
    "FastConsumer",
    "FastTransport",
    "LeanMonitor",
    "PromptTableManager",
    "RawSchema",
    "TunedConsumerThread",
    "make_app",
    "running",
    "source_topic",
]
