"""`agentaudit erase` and `agentaudit reveal`: erasure by crypto-shredding (issue 11, part E).

The library side is `agentaudit.subjects`; these commands parse options and print. Nothing
here prints a key: only key ids.
"""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer
from rich.console import Console

from agentaudit.cli.actor import acting
from agentaudit.errors import StoreUnavailable, UserError
from agentaudit.settings import Settings

console = Console()
err_console = Console(stderr=True)


def erase(
    tenant: Annotated[str, typer.Option("--tenant", help="The subject's tenant.")],
    reason: Annotated[
        str,
        typer.Option("--reason", help="Why (recorded in the trail), e.g. the request's reference."),
    ],
    subject: Annotated[
        str | None, typer.Option("--subject", help="The data subject: the events' user_id.")
    ] = None,
    unattributed: Annotated[
        bool,
        typer.Option(
            "--unattributed", help="Erase the tenant's content of events without a user_id instead."
        ),
    ] = False,
    by: Annotated[
        str | None,
        typer.Option("--by", help="Who erases (the event's user_id) [default: the OS user]."),
    ] = None,
) -> None:
    """Destroy a subject's content keys: their prompts, responses, error messages and attribute
    values become unreadable for good; every checkpoint and proof still verifies. A
    `subject_erased` event is published (acknowledged) first, the keys are destroyed after."""
    from agentaudit.store import open_store, store_exists
    from agentaudit.subjects.erasure import erase_subject
    from agentaudit.subjects.keystore import SubjectKeyStore

    if (subject is None) == (not unattributed):
        raise UserError("give exactly one of --subject S and --unattributed")
    settings = Settings()
    SubjectKeyStore.from_settings(settings).check()  # an outage says so before anything else
    if settings.embedded and not store_exists(settings):
        raise StoreUnavailable(f"no store at {settings.store_dir}: legal holds cannot be checked")
    with open_store(settings) as store:  # legal holds live there (`agentaudit hold`)
        done = erase_subject(settings, tenant, subject, reason, acting(by), store=store)
    who = f"subject {subject}" if subject is not None else "unattributed content"
    keys = ", ".join(done.destroyed) or "none existed"
    console.print(
        f"erased {who} of {tenant}: recorded as event {done.event_id}; keys destroyed: {keys}; "
        f"dead letters erased: {done.dead_letters}",
        highlight=False,
        soft_wrap=True,
    )


def reveal(
    event: Annotated[str, typer.Option("--event", help="The event id.")],
) -> None:
    """Print one stored event as JSON with its sealed content decrypted (an operator's read;
    auditors' SQL sees only ciphertext). Erased values show as {"erased": true, "kid": …}."""
    from agentaudit.store import open_store, store_exists
    from agentaudit.subjects.erasure import reveal_event

    settings = Settings()
    if settings.embedded and not store_exists(settings):
        raise StoreUnavailable(f"no store at {settings.store_dir}")
    with open_store(settings) as store:
        opened = reveal_event(settings, store, event)
    sys.stdout.write(
        orjson.dumps(opened.doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
    )
    if opened.erased:
        err_console.print(
            f"erased (key destroyed): {', '.join(opened.erased)}", highlight=False, soft_wrap=True
        )
    if opened.tampered:
        raise UserError(
            f"sealed values that do not open with their key: {', '.join(opened.tampered)}"
        )


def register(app: typer.Typer) -> None:
    """Add `erase` and `reveal` to the top-level `app`."""
    app.command("erase")(erase)
    app.command("reveal")(reveal)
