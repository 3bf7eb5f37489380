"""What the jobs do with a record of the budgets or pins topic (`StreamJobsApp._follow`): a
budget or pin set or removed; a record they cannot read is logged and skipped."""

from __future__ import annotations

import logging
from datetime import datetime

import orjson
from pydantic import ValidationError

from agentaudit.goldsets_plane import PinRecord
from agentaudit_schemas.budgets import Budget
from stream_jobs.drift.pins import parse_pin_key
from stream_jobs.jobs import Record, StreamJobs

log = logging.getLogger("agentaudit.stream_jobs")


def apply_budget(
    jobs: StreamJobs, key: bytes | None, value: bytes | None, now: datetime
) -> list[Record]:
    """A budgets-topic record: set the budget, or remove it (a tombstone keyed by its name)."""
    if not value:
        try:
            name = (key or b"").decode()
        except UnicodeDecodeError:  # no budget has this name: nothing to remove
            log.warning("skipping a budget tombstone with an unreadable key %r", key)
            return []
        return jobs.remove_budget(name, now) if name else []
    try:
        budget = Budget.model_validate_json(value)
    except (ValidationError, orjson.JSONDecodeError) as exc:
        log.warning("skipping an invalid budget record %r: %s", key, exc)
        return []
    if key != budget.name.encode():  # the key is what `budgets rm` tombstones
        log.warning("skipping budget %r keyed %r: the key must be its name", budget.name, key)
        return []
    return jobs.set_budget(budget, now)


def apply_pin(jobs: StreamJobs, key: bytes | None, value: bytes | None) -> list[Record]:
    """A pins-topic record: set the pin, or (a tombstone: `agentaudit goldsets unpin`) stop
    comparing that metric."""
    if not value:
        try:
            tenant, gold_set, metric = parse_pin_key((key or b"").decode())
        except (UnicodeDecodeError, ValueError) as exc:
            log.warning("skipping a pin tombstone with an unreadable key %r: %s", key, exc)
            return []
        return jobs.remove_pin(tenant, gold_set, metric)
    try:
        record = PinRecord.decode(value)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("skipping an invalid pin record %r: %r", key, exc)
        return []
    return jobs.set_pin(record.pin, record.models)
