"""The last few values put, by key: what the explorer keeps between requests (uploads, unhidden answers)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    """The last ``keep`` values put, by key; the oldest is dropped first. Thread-safe: the server answers
    requests in a thread pool."""

    def __init__(self, keep: int):
        self.keep = keep
        self._values: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.keep:
                self._values.popitem(last=False)

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._values.get(key)

    def __len__(self) -> int:
        return len(self._values)
