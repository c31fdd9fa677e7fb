"""Freed memory handed back to the system (memtrim.py)."""

from __future__ import annotations

import asyncio

import pytest

from mlmodel_operator import memtrim


def test_malloc_trim_is_found_and_callable_on_glibc() -> None:
    trim = memtrim.malloc_trim()
    assert trim is not None  # the images and this machine run glibc
    trim()


def test_trimming_runs_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memtrim, "malloc_trim", lambda: lambda: calls.append(1))

    async def main() -> None:
        task = asyncio.create_task(memtrim.trim_periodically(every=0.01))
        for _ in range(200):
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(calls) >= 3


def test_without_malloc_trim_nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memtrim, "malloc_trim", lambda: None)
    asyncio.run(asyncio.wait_for(memtrim.trim_periodically(every=0.01), 1))  # returns at once
