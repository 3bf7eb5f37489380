"""Anomaly detection over per-tenant minute series (issue #4). Pure logic, no faust.

Entry point: `AnomalyMonitor` (one per tenant, JSON state). Detectors: `detectors`;
decision rules: `evaluate`; sensitivity: `config`; alert kinds and texts: `alerts`.
"""

from stream_jobs.anomaly.alerts import ANOMALY_KINDS, KIND_OF
from stream_jobs.anomaly.config import AnomalyConfig, MetricConfig
from stream_jobs.anomaly.monitor import AnomalyMonitor
from stream_jobs.anomaly.series import METRICS, Metric, MinuteAcc

__all__ = [
    "ANOMALY_KINDS",
    "KIND_OF",
    "METRICS",
    "AnomalyConfig",
    "AnomalyMonitor",
    "Metric",
    "MetricConfig",
    "MinuteAcc",
]
