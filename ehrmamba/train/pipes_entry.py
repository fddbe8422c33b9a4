"""Pretraining as an external process: one rank of ``torchrun``, launched through Dagster Pipes.

``torchrun --nproc-per-node N -m ehrmamba.train.pipes_entry`` starts N copies of this script;
Lightning's DDP strategy finds the ranks in torchrun's environment. Every rank reads the job
(data paths, MLflow store, :class:`PretrainConfig`) from the Pipes context's ``extras``; rank 0
alone opens the Pipes message channel, streams its log lines and reports the materialization,
so Dagster sees one asset event, not N.

This is the only module of the library that knows about Dagster, and it needs only the tiny
``dagster-pipes`` package, not Dagster itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader, open_dagster_pipes

from ehrmamba.tokenize import Vocabulary
from ehrmamba.train.pretrain import PretrainConfig, PretrainResult, pretrain


def load_extras() -> dict[str, Any]:
    """The job Dagster passed in the Pipes context, readable by every rank (read-only)."""
    params = PipesEnvVarParamsLoader().load_context_params()
    with PipesDefaultContextLoader().load_context(params) as data:
        return dict(data["extras"])


def run(extras: dict[str, Any], log=print) -> PretrainResult:
    """Train as the job says; with several ranks every one calls this, rank 0 logs to MLflow."""
    config = PretrainConfig(**extras["train_config"])
    vocab = Vocabulary.load(Path(extras["vocabulary"]))
    log(
        f"rank {os.environ.get('RANK', '0')}/{os.environ.get('WORLD_SIZE', '1')}: "
        f"pretraining {config.preset} on {config.devices} device(s) x {config.num_nodes} node(s)"
    )
    return pretrain(
        Path(extras["sequences"]),
        vocab,
        config,
        output_dir=Path(extras["output_dir"]),
        tracking_uri=extras["tracking_uri"],
        artifact_location=extras.get("artifact_location"),
        run_name=extras.get("run_name"),
    )


def main() -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        run(load_extras(), log=lambda _msg: None)
        return
    with open_dagster_pipes() as pipes:
        extras = dict(pipes.extras)
        result = run(extras, log=pipes.log.info)
        pipes.log.info(f"MLflow run {result.run_id}: {result.metrics}")
        pipes.report_asset_materialization(
            metadata={
                "mlflow_run_id": result.run_id,
                "mlflow_tracking_uri": extras["tracking_uri"],
                "model_dir": {"raw_value": str(result.model_dir.resolve()), "type": "path"},
                "preset": extras["train_config"]["preset"],
                "launcher": "torchrun",
                "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                **{k: {"raw_value": float(v), "type": "float"} for k, v in result.metrics.items()},
            }
        )


if __name__ == "__main__":
    main()
