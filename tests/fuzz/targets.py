"""Every fuzz target by name: the public C wrappers against the reference (:mod:`tests.fuzz.api_targets`)
and the binding under corrupted structs and buffers (:mod:`tests.fuzz.raw_targets`)."""

from __future__ import annotations

from typing import Any, Callable

from hypothesis import strategies as st

from tests.fuzz.api_targets import API_TARGETS
from tests.fuzz.raw_targets import RAW_TARGETS
from tests.fuzz.server import Verdict

__all__ = ["TARGETS", "execute"]

TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], Verdict]]] = {**API_TARGETS, **RAW_TARGETS}


def execute(target: str, case: Any) -> Verdict:
    """Run one case of ``target`` (in the fork server's worker)."""
    return TARGETS[target][1](case)
