"""A module-scoped, autouse fixture that runs every test of the module that imports it once per path of
fake quantization: the torch path (the reference) and each loop set of the fused C path this CPU runs
(quant.sim.fused), so the module's properties prove the paths give the same values and gradients."""

from __future__ import annotations

from typing import Iterator

import pytest

from quant.sim import fused

PATHS = ["off"] + [isa for isa in ("portable", "avx2") if fused.available(isa)]


@pytest.fixture(scope="module", params=PATHS, ids=[f"fake-quant-{p}" for p in PATHS], autouse=True)
def fake_quant_path(request: pytest.FixtureRequest) -> Iterator[str]:
    with fused.fused_path(request.param):
        yield request.param
