"""Results on disk, once: atomic JSON writes and a resumable list of records.

A record is one trained configuration on one split (or run); its key is the
settings that produced it, so a re-run skips what is done and never mixes
records of different settings.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence


def write_json(path: str, obj) -> None:
    """Atomic write: a crash never leaves half a file behind."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class RecordStore:
    """The records in ``path`` (a JSON list), keyed by ``key_fields``.

    >>> import tempfile, os
    >>> store = RecordStore(os.path.join(tempfile.mkdtemp(), "r.json"), ("method", "split"))
    >>> store.add([{"method": "erm", "split": 0, "test_nll": 1.0}])
    >>> RecordStore(store.path, ("method", "split")).has({"method": "erm", "split": 0})
    True
    """

    def __init__(self, path: str, key_fields: Sequence[str], defaults: dict | None = None):
        """``defaults``: values of fields that records of an earlier release lack (they
        are filled in on loading, where they are what that release did)."""
        self.path = path
        self.key_fields = tuple(key_fields)
        self.records: list[dict] = self._load()
        for r in self.records:
            for k, v in (defaults or {}).items():
                r.setdefault(k, v)
        self._keys = {self.key(r) for r in self.records}

    def _load(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        try:
            with open(self.path) as f:
                recs = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{self.path} is not valid JSON ({e}); move it away to start afresh"
            ) from None
        if not isinstance(recs, list):
            raise ValueError(f"{self.path} does not hold a list of records")
        return recs

    def key(self, record: dict) -> tuple:
        return tuple(record.get(k) for k in self.key_fields)

    def has(self, record: dict) -> bool:
        return self.key(record) in self._keys

    def add(self, records: Iterable[dict]) -> None:
        """Append ``records`` (replacing any with the same key) and write the file."""
        new = list(records)
        keys = {self.key(r) for r in new}
        self.records = [r for r in self.records if self.key(r) not in keys] + new
        self._keys |= keys
        write_json(self.path, self.records)
