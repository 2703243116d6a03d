"""Shared test configuration: hypothesis profiles.

``ci`` (the default) keeps the property suites fast on small machines;
``thorough`` runs many more examples: ``HYPOTHESIS_PROFILE=thorough pytest tests``.

This folder has no ``__init__.py``, so pytest puts it on ``sys.path`` (as the
rootdir of this conftest): every test imports the shared hypothesis strategies
as ``strategies`` (tests/strategies.py) and the reference helpers, among them
``values_equal``, as ``helpers`` (tests/helpers.py).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=2000,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
