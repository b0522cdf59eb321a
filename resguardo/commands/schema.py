"""``resguardo schema export DIR``: JSON Schema per event and an AsyncAPI 3 document."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _export(args: argparse.Namespace) -> int:
    from shared.schema import export

    written = export(Path(args.directory))
    if args.json:
        print(json.dumps([str(p) for p in written]))
    else:
        hooks = sum(1 for p in written if p.parent.name == "webhooks")
        print(
            f"Wrote {len(written)} files to {args.directory} ({len(written) - 1 - hooks} event "
            f"schemas, {hooks} webhook body schemas in webhooks/, and asyncapi.json)."
        )
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("schema", help="export event contracts")
    schema_sub = parser.add_subparsers(dest="schema_command", metavar="ACTION", required=True)
    export = schema_sub.add_parser("export", help="write JSON Schemas and an AsyncAPI document")
    export.add_argument("directory", help="folder to write into (created if missing)")
    export.add_argument("--json", action="store_true", help="print the written paths as JSON")
    export.set_defaults(func=_export)
