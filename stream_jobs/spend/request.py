"""Per-request ceilings: the comparison lives in the contract (`schemas/request_ceiling.py`),
which the SDK ships; re-exported here for the pipeline."""

from agentaudit_schemas.request_ceiling import RequestViolation, check_request

__all__ = ["RequestViolation", "check_request"]
