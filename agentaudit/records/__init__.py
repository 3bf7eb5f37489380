"""Pipeline records (alerts, control, breaker transitions, drift scores) into ClickHouse.

`rows` maps each record kind to its table and columns; `processor` decides what each message
becomes; `sink.RecordSink` is the consumer that lands them exactly once.
"""

from agentaudit.records.rows import RECORD_TABLES, RecordTable
from agentaudit.records.sink import RecordSink, run_record_sink

__all__ = ["RECORD_TABLES", "RecordSink", "RecordTable", "run_record_sink"]
