"""Errors a user can fix. The CLI prints their message on one line and exits non-zero, no
traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake or missing prerequisite the user can fix; the message says what to do."""

    exit_code = 2


class BrokerUnreachable(UserError):
    exit_code = 3


class StoreUnavailable(UserError):
    exit_code = 4


class BadQuery(UserError):
    exit_code = 5


class StoreRefused(UserError):
    """The store answered a write with an engine error retrying cannot fix; nothing of that
    batch was committed, so it is read again once the cause is fixed."""

    exit_code = 6
