"""Who runs a command, as the trail records it (the acting operator)."""

from __future__ import annotations

import getpass


def os_user(default: str) -> str:
    """The OS login name, or ``default`` when there is none (a container with an unknown uid)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return default


def acting(by: str | None) -> str:
    """``--by NAME`` when given, else the OS user (``operator`` when there is none)."""
    return by or os_user("operator")
