"""Training beyond one process, on the CPU: Lightning DDP over gloo, and torchrun through Pipes.

The same code trains on N GPUs of one node or of several; here 2 CPU processes stand in for
them. Real data (a synthetic cohort through ingestion, dbt and the tokenizer), real MLflow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import pytest

from ehrmamba.tokenize import TokenizerConfig, fit_vocabulary, write_pretraining_sequences
from ehrmamba.train import PretrainConfig, pretrain
from orchestration.assets.modeling import pretrained_model
from orchestration.resources import PlatformSettings

MAX_LEN = 64  # short sequences: the test is about processes, not about context length


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, synthetic_warehouse) -> dict:
    root = tmp_path_factory.mktemp("scale_out")
    with duckdb.connect(str(synthetic_warehouse(60, seed=3)), read_only=True) as con:
        vocab = fit_vocabulary(con, TokenizerConfig(max_len=MAX_LEN))
        sequences = write_pretraining_sequences(con, vocab, root / "seq", max_len=MAX_LEN)
    vocab.save(root / "vocabulary.json")
    return {
        "root": root,
        "sequences": sequences,
        "vocab": vocab,
        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "artifact_location": (root / "mlflow-artifacts").as_uri(),
    }


def _loss_curve(tracking_uri: str, run_id: str) -> list[float]:
    """train_loss per optimizer step, as Lightning logged it (the run's summary value, logged
    last and without a step, is left out)."""
    history = mlflow.MlflowClient(tracking_uri).get_metric_history(run_id, "train_loss")
    history = sorted(history, key=lambda m: m.timestamp)[:-1]
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def _third_means(curve: list[float]) -> tuple[float, float]:
    k = max(1, len(curve) // 3)
    return sum(curve[:k]) / k, sum(curve[-k:]) / k


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_follows_the_single_process_loss_curve(
    corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one core per process: numba (the scan) and torch would otherwise each take both
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = dict(
        preset="tiny",
        max_epochs=3,
        learning_rate=5e-3,
        log_every_n_steps=1,
        accelerator="cpu",
        progress_bar=False,
        model_overrides={"dropout": 0.0},
    )
    tracking = {k: corpus[k] for k in ("tracking_uri", "artifact_location")}
    single = pretrain(
        corpus["sequences"],
        corpus["vocab"],
        PretrainConfig(batch_size=8, **common),
        output_dir=tmp_path / "single",
        **tracking,
    )
    # the same global batch (2 x 4), so the same number of optimizer steps
    ddp = pretrain(
        corpus["sequences"],
        corpus["vocab"],
        PretrainConfig(batch_size=4, devices=2, strategy="ddp_spawn", **common),
        output_dir=tmp_path / "ddp",
        **tracking,
    )

    one, two = (
        _loss_curve(corpus["tracking_uri"], single.run_id),
        _loss_curve(corpus["tracking_uri"], ddp.run_id),
    )
    assert len(one) == len(two) >= 12
    for curve in (one, two):
        first, last = _third_means(curve)
        assert last < first - 0.5, curve  # both learn
    mean_gap = sum(abs(a - b) for a, b in zip(one, two, strict=True)) / len(one)
    assert mean_gap < 0.3, (one, two)
    # tuning loss over the whole tuning set (summed across both ranks), within 3%
    assert (
        abs(ddp.metrics["tuning_loss"] - single.metrics["tuning_loss"])
        < 0.03 * (single.metrics["tuning_loss"])
    )
    run = mlflow.MlflowClient(corpus["tracking_uri"]).get_run(ddp.run_id)
    assert run.data.params["train.devices"] == "2"
    assert run.data.params["train.strategy"] == "ddp_spawn"
    assert (ddp.model_dir / "config.json").exists()


@pytest.mark.slow
def test_pipes_launches_torchrun_with_two_ranks_and_rank_zero_reports(
    corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "artifacts" / "vocabulary").mkdir(parents=True)
    (home / "artifacts" / "sequences").mkdir(parents=True)
    shutil.copyfile(
        corpus["root"] / "vocabulary.json", home / "artifacts" / "vocabulary" / "current.json"
    )
    shutil.copyfile(corpus["sequences"], home / "artifacts" / "sequences" / "pretraining.parquet")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", corpus["tracking_uri"])
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [pretrained_model],
        resources={"platform": PlatformSettings(home=str(home))},
        run_config={
            "ops": {
                "training__pretrained_model": {
                    "config": {
                        "preset": "tiny",
                        "launcher": "torchrun",
                        "devices": 2,
                        "max_epochs": 1,
                        "max_steps": 4,
                        "batch_size": 4,
                    }
                }
            }
        },
        instance=instance,
    )

    assert result.success
    [mat] = result.asset_materializations_for_node("training__pretrained_model")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["launcher"] == "torchrun"
    assert meta["world_size"] == 2
    assert meta["preset"] == "tiny"
    assert meta["tuning_perplexity"] > 1.0
    assert Path(meta["model_dir"], "config.json").exists()
    run = mlflow.MlflowClient(corpus["tracking_uri"]).get_run(meta["mlflow_run_id"])
    assert run.data.params["train.devices"] == "2"
    assert run.data.params["train.strategy"] == "ddp"  # chosen for torchrun with 2 devices
    # two ranks trained, one reported: rank 0's log lines came back over Pipes, rank 1's did not
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("rank 0/2: pretraining tiny on 2 device(s)" in m for m in messages)
    assert not any("rank 1/2" in m for m in messages)
