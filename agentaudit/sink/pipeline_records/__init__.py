"""Pipeline records (alerts, control, breaker transitions, drift scores) into ClickHouse.

`rows` maps each record kind to its table and columns; `routing.RecordProcessor` decides what
each message becomes; `sink.RecordSink` is the consumer that lands them exactly once.
"""

from agentaudit.sink.pipeline_records.rows import RECORD_TABLES, RecordTable
from agentaudit.sink.pipeline_records.sink import RecordSink, run_record_sink

__all__ = ["RECORD_TABLES", "RecordSink", "RecordTable", "run_record_sink"]
