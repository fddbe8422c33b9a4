"""Keep a training run's MLflow store from becoming the process's default.

Lightning's ``MLFlowLogger`` calls ``mlflow.set_tracking_uri``, which also exports
``MLFLOW_TRACKING_URI`` to the process environment. ``Settings.mlflow_tracking_uri`` honours that
variable, so after one run logged to an explicit store, every later run in the same process (a
Dagster code server, an in-process job, the test suite) would silently log to that store too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow.environment_variables import MLFLOW_TRACKING_URI


@contextmanager
def process_tracking_uri_kept() -> Iterator[None]:
    """Restore the process's MLflow tracking URI (and its environment variable) on exit."""
    before = MLFLOW_TRACKING_URI.get()
    try:
        yield
    finally:
        # set_tracking_uri(None) also removes the variable; a URI set with it before is in it
        mlflow.set_tracking_uri(before)
