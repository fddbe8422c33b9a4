"""Pretraining in ``torchrun`` processes, launched and observed through Dagster Pipes.

The ``training/pretrained_model`` asset trains in the Dagster step's own process by default.
With ``launcher: torchrun`` in its run config, the step instead starts
``torchrun --standalone --nproc-per-node <devices> -m ehrmamba.train.pipes_entry``: one process
per GPU (or per CPU core group, with gloo), Lightning's DDP across them, rank 0 streaming its
logs and reporting the materialization back over Pipes. The same command runs in a Kubernetes
pod with N GPUs (see ``docs/scale-out.md``).
"""

import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import dagster as dg

from ehrmamba.train import PretrainConfig

ENTRY_MODULE = "ehrmamba.train.pipes_entry"


def torchrun_command(nproc_per_node: int) -> list[str]:
    """torchrun of this interpreter, one node, a free local rendezvous port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc_per_node}",
        "-m",
        ENTRY_MODULE,
    ]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pretrain_with_torchrun(
    context: dg.AssetExecutionContext,
    config: PretrainConfig,
    *,
    sequences: Path,
    vocabulary: Path,
    output_dir: Path,
    tracking_uri: str,
    artifact_location: str,
    run_name: str,
    client: dg.PipesSubprocessClient | None = None,
) -> dg.MaterializeResult:
    """Run :func:`ehrmamba.train.pretrain` under torchrun; rank 0's report is the result."""
    if config.num_nodes != 1:
        raise dg.Failure(
            f"launcher=torchrun starts one node from this step; num_nodes={config.num_nodes} "
            "needs a multi-node job (Kubernetes PyTorchJob), see docs/scale-out.md",
            allow_retries=False,
        )
    nproc = max(1, config.devices)
    if nproc > 1 and config.strategy == "auto":
        config = replace(config, strategy="ddp")
    # the processes share the step's cores: no oversubscription by torch or numba threads
    threads = str(max(1, _cores() // nproc))
    client = client or dg.PipesSubprocessClient()
    invocation = client.run(
        context=context,
        command=torchrun_command(nproc),
        extras={
            "train_config": asdict(config),
            "sequences": str(Path(sequences).resolve()),
            "vocabulary": str(Path(vocabulary).resolve()),
            "output_dir": str(Path(output_dir).resolve()),
            "tracking_uri": tracking_uri,
            "artifact_location": artifact_location,
            "run_name": run_name,
        },
        env={"OMP_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads},
    )
    return invocation.get_materialize_result()
