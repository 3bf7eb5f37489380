"""`agentaudit keys init | rotate | public`: the checkpoint signing key (issue 10).

The library side is `agentaudit.keyring`; these commands only parse options and print. Nothing
here ever prints the private key: only fingerprints, times and public keys.
"""

from __future__ import annotations

import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agentaudit.cli.output import render_table
from agentaudit.errors import UserError
from agentaudit.settings import Settings

app = typer.Typer(help="The key that signs the trail's checkpoints.", no_args_is_help=True)
console = Console()

KeyDirOption = Annotated[
    Path | None,
    typer.Option(
        "--key-dir",
        help="Directory of the signing key [env AGENTAUDIT_KEY_DIR; default "
        "~/.config/agentaudit/keys].",
    ),
]


class PublicFormat(StrEnum):
    table = "table"
    json = "json"


def _time(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "?"


def _key_dir(key_dir: Path | None) -> Path:
    return key_dir if key_dir is not None else Settings().key_dir


@app.command("init")
def init(key_dir: KeyDirOption = None) -> None:
    """Create the signing key (private key 0600 in a 0700 directory) and the public-key file.
    Refuses if a key exists: use `rotate` to replace it."""
    from agentaudit.keyring import PUBLIC_KEYS_FILE, init_keys

    ring = init_keys(_key_dir(key_dir))
    console.print(
        f"created signing key {ring.current.fingerprint} in {ring.key_dir}; "
        f"give auditors {ring.key_dir / PUBLIC_KEYS_FILE} "
        "(or `agentaudit keys public --out FILE`)",
        highlight=False,
        soft_wrap=True,
    )


@app.command("rotate")
def rotate(key_dir: KeyDirOption = None) -> None:
    """Make a new current key. The old private key is deleted; its public key stays listed
    (retired) so the checkpoints it signed still verify."""
    from agentaudit.keyring import rotate_keys

    ring = rotate_keys(_key_dir(key_dir))
    old = ring.public_keys[-2]
    console.print(
        f"rotated: key {ring.current.fingerprint} is current; {old.fingerprint} retired "
        f"at {_time(old.retired_at)}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("public")
def public(
    key_dir: KeyDirOption = None,
    format: Annotated[
        PublicFormat,
        typer.Option("--format", "-f", help="table, or json: the public-key file for auditors."),
    ] = PublicFormat.table,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the public-key file (JSON) to FILE instead."),
    ] = None,
) -> None:
    """Show every public key ever used (oldest first) with its creation and retirement times."""
    from agentaudit.keyring import PUBLIC_KEYS_FILE, load_public_keys

    keys = load_public_keys(_key_dir(key_dir) / PUBLIC_KEYS_FILE)
    if out is not None:
        try:
            out.write_text(keys.dumps(), encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write {out}: {e.strerror or e}") from None
        console.print(
            f"wrote {len(keys.keys)} public key(s) to {out}", highlight=False, soft_wrap=True
        )
        return
    if format is PublicFormat.json:
        sys.stdout.write(keys.dumps())  # verbatim: rich would wrap and colour it
        return
    rows = [
        (k.fingerprint, _time(k.created_at), _time(k.retired_at) if k.retired_at else "current")
        for k in keys.keys
    ]
    render_table(["fingerprint", "created", "retired"], rows, ["fingerprint"], "key", console)
