"""``resguardo config [--json]``: every RESGUARDO_* variable, its default and what it does.

Collected from the services' own config dataclasses, so the list cannot drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from shared.backupstore.config import BackupStoreConfig
from shared.config import CommonConfig, describe

# module -> who reads the settings declared there
CONFIG_MODULES = {
    "shared.config": "all",
    "resguardo.supervisor": "supervisor",
    "services.api.config": "api",
    "services.proxy.config": "proxy",
    "services.transcoder.config": "transcoder",
    "services.credentials.config": "credentials",
    "services.uploader.config": "uploader",
    "services.notifier.config": "notifier",
    "shared.backupstore.config": "proxy,transcoder,uploader",
}


def all_settings() -> list[dict[str, str]]:
    """[{variable, default, doc, used_by}] for every variable, each listed once."""
    rows: dict[str, dict[str, str]] = {}
    for module_name, reader in CONFIG_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for obj in vars(module).values():
            if not (
                isinstance(obj, type)
                and dataclasses.is_dataclass(obj)
                and (issubclass(obj, CommonConfig) or obj is BackupStoreConfig)
            ):
                continue
            owner = "all" if obj is CommonConfig else reader
            for variable, default, doc in describe(obj):
                row = rows.setdefault(
                    variable, {"variable": variable, "default": default, "doc": doc, "used_by": ""}
                )
                if row["used_by"] == "all":
                    continue
                users = set(filter(None, row["used_by"].split(","))) | {owner}
                row["used_by"] = "all" if "all" in users else ",".join(sorted(users))
    return sorted(rows.values(), key=lambda r: r["variable"])


def markdown_table() -> str:
    lines = ["| Variable | Default | Used by | What it does |", "|---|---|---|---|"]
    for r in all_settings():
        default = f"`{r['default']}`" if r["default"] else ""
        lines.append(f"| `{r['variable']}` | {default} | {r['used_by']} | {r['doc']} |")
    return "\n".join(lines) + "\n"


def providers_table() -> str:
    """Every destination provider's config fields (from shared.providers)."""
    from shared.providers import COMMON_FIELDS, PROVIDERS

    lines = ["| Provider | Field | Secret | Required | What it is |", "|---|---|---|---|---|"]
    for provider, specs in [*PROVIDERS.items(), ("all", COMMON_FIELDS)]:
        for f in specs:
            choices = f" One of: {', '.join(f.choices)}." if f.choices else ""
            lines.append(
                f"| {provider} | `{f.name}` | {'yes' if f.secret else ''} | "
                f"{'yes' if f.required else ''} | {f.doc}{choices} |"
            )
    return "\n".join(lines) + "\n"


GENERATED = {"config-table": markdown_table, "providers-table": providers_table}


def readme_with_table(text: str) -> str:
    """``text`` with each generated table put between its ``<!-- name:start/end -->`` markers."""
    for name, make in GENERATED.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start not in text:
            continue
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = f"{head}{start}\n{make()}{end}{tail}"
    return text


def _show(args: argparse.Namespace) -> int:
    if args.update_readme:
        path = Path(args.update_readme)
        path.write_text(readme_with_table(path.read_text()))
        return 0
    rows = all_settings()
    if args.markdown:
        print(markdown_table(), end="")
        return 0
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["variable"]) for r in rows)
    for r in rows:
        default = f" (default: {r['default']})" if r["default"] else ""
        print(f"{r['variable']:<{width}}  {r['doc']}{default}  [{r['used_by']}]")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="list every RESGUARDO_* setting")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--markdown", action="store_true", help="the README's table")
    parser.add_argument("--update-readme", metavar="PATH", help="rewrite PATH's config table")
    parser.set_defaults(func=_show)
