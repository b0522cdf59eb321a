"""Reading a service's health port as Prometheus and a probe would: the URL from its
``<run dir>/<service>.health`` file, ``/readyz`` as JSON, ``/metrics`` through prometheus-client's
own parser (so a page Prometheus could not read fails the test)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .servers import wait_until


def health_url(run_dir: Path, service: str, timeout: float = 30) -> str:
    path = run_dir / f"{service}.health"
    wait_until(path.exists, timeout=timeout, message=f"{path} to be written")
    return path.read_text().strip()


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def readiness(base: str) -> tuple[int, dict[str, Any]]:
    status, body = get(base + "/readyz")
    return status, json.loads(body)


@dataclass(frozen=True)
class Samples:
    """Every sample of one /metrics page: (sample name, labels) -> value."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]
    types: dict[str, str]  # metric family -> counter, gauge, histogram...

    def get(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        found = self.get(name, **labels)
        assert found is not None, f"no sample {name}{labels}; have {self.named(name)}"
        return found

    def named(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: v for (n, labels), v in self.values.items() if n == name}


def parse(text: str) -> Samples:
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in values, f"sample {key} appears twice"
            values[key] = sample.value
    return Samples(values, types)


def scrape(base: str) -> Samples:
    status, body = get(base + "/metrics")
    assert status == 200, (status, body[:500])
    return parse(body.decode())
