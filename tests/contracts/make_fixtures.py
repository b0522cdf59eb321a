"""Write a fixture for every event version that has none: `python -m tests.contracts.make_fixtures`.

Existing fixtures are never rewritten: they are the wire format that old messages in a stream
still have, and the contract tests prove the current code still decodes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from shared.events import EVENT_TYPES, tag_of

from .samples import build

FIXTURES = Path(__file__).parent / "fixtures"


def main() -> None:
    for event_type in EVENT_TYPES:
        event = build(event_type)
        path = FIXTURES / tag_of(event_type) / f"v{event.schema_version}.json"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(msgspec.json.encode(event))
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
