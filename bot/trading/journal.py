"""JSON-lines journal: one object per order, fill, position change and lifecycle event, flushed per line."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import orjson


class Journal:
    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.time,
        echo: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.path = path
        self.echo = echo
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = path.open("a", encoding="utf-8")
        self._clock = clock

    def write(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        record = {"ts": round(self._clock(), 6), "event": event, **fields}
        self._file.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
        self._file.flush()
        if self.echo is not None:
            self.echo(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
