"""Shared pytest configuration: hypothesis profiles and seeding."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

# "default" keeps the whole suite within minutes on a 2-core machine; "thorough" is for
# longer local sweeps: HYPOTHESIS_PROFILE=thorough make test
settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

torch.set_num_threads(min(2, torch.get_num_threads()))
