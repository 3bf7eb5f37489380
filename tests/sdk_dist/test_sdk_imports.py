"""Fast check (every CI run): the SDK's sources (producers/, schemas/) import only the SDK's
own packages, the standard library and the SDK's declared dependencies, so
`pip install agentaudit-sdk` alone is enough (no server code: agentaudit, stream_jobs, chDB,
faust, numpy, scipy). Imports are read with `ast`, nested and TYPE_CHECKING ones included."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import agentaudit
import agentaudit_sdk

ROOT = Path(__file__).resolve().parents[2]
OWN = {"agentaudit_sdk", "agentaudit_schemas"}
# distribution name -> import name, for the SDK's declared dependencies
IMPORT_NAMES = {
    "pyyaml": "yaml",
    "uuid-utils": "uuid_utils",
    "genai-prices": "genai_prices",
    "pydantic-settings": "pydantic_settings",
    "pydantic-core": "pydantic_core",
}


def _declared(*, extras: bool = True) -> set[str]:
    """Import names of the SDK's dependencies (and of its extras' packages)."""
    project = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    if extras:
        deps += [d for group in project["optional-dependencies"].values() for d in group]
    names = {re.split(r"[\s\[<>=!~;]", dep, maxsplit=1)[0].lower() for dep in deps}
    return {IMPORT_NAMES.get(n, n.replace("-", "_")) for n in names}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_sdk_sources_import_nothing_outside_the_sdk() -> None:
    allowed = OWN | _declared() | set(sys.stdlib_module_names)
    bad = {
        f"{path.relative_to(ROOT)}: {name}"
        for folder in ("producers", "schemas")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in _imports(path) - allowed
    }
    assert not bad, sorted(bad)


def test_extras_are_imported_only_inside_functions() -> None:
    """A package of an extra (genai_prices) may be missing: importing no SDK module needs it."""
    optional = _declared() - _declared(extras=False)
    assert optional, "the SDK has extras"
    bad = set()
    for folder in ("producers", "schemas"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in tree.body:  # module level only: function bodies run on first use
                names: set[str] = set()
                if isinstance(node, ast.Import):
                    names = {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = {node.module.split(".")[0]}
                bad |= {f"{path.relative_to(ROOT)}: {n}" for n in names & optional}
    assert not bad, sorted(bad)


def test_sdk_and_server_share_one_version() -> None:
    sdk = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["project"]["version"]
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sdk == agentaudit_sdk.__version__ == agentaudit.__version__ == server["version"]
    assert f"agentaudit-sdk=={sdk}" in server["dependencies"]


def test_the_sdk_symlinks_point_at_the_source_folders() -> None:
    assert (ROOT / "sdk" / "agentaudit_sdk").resolve() == ROOT / "producers"
    assert (ROOT / "sdk" / "agentaudit_schemas").resolve() == ROOT / "schemas"
