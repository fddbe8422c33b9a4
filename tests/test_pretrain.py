"""Pretraining on the synthetic cohort: it learns, it logs to MLflow, it resumes exactly."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import torch

from ehrmamba.tokenize import TokenizerConfig, fit_vocabulary, write_pretraining_sequences
from ehrmamba.train import PretrainConfig, load_pretrained_from_mlflow, pretrain


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, synthetic_warehouse) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("pretrain")
    with duckdb.connect(str(synthetic_warehouse(60, seed=3)), read_only=True) as con:
        vocab = fit_vocabulary(con, TokenizerConfig(max_len=256))
        sequences = write_pretraining_sequences(con, vocab, root / "seq", max_len=256)
    return sequences, vocab


def _tracking(tmp_path: Path) -> dict[str, str]:
    return {
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "artifact_location": (tmp_path / "artifacts").as_uri(),
    }


@pytest.mark.slow
def test_tiny_pretraining_beats_unigram_and_logs_a_loadable_model(corpus, tmp_path) -> None:
    sequences, vocab = corpus
    config = PretrainConfig(
        preset="tiny", max_epochs=15, batch_size=8, learning_rate=5e-3, progress_bar=False
    )
    result = pretrain(sequences, vocab, config, output_dir=tmp_path / "out", **_tracking(tmp_path))

    assert result.metrics["tuning_perplexity"] < 0.5 * result.metrics["unigram_perplexity"]
    model, logged_vocab = load_pretrained_from_mlflow(
        result.run_id, _tracking(tmp_path)["tracking_uri"]
    )
    assert logged_vocab.version == vocab.version
    ids = torch.tensor([[3, 10, 11, 12, 13]])
    trained = type(model).from_pretrained(result.model_dir)
    model.eval()
    trained.eval()
    torch.testing.assert_close(model(ids).logits, trained(ids).logits)

    import mlflow

    run = mlflow.MlflowClient(_tracking(tmp_path)["tracking_uri"]).get_run(result.run_id)
    assert run.data.params["train.preset"] == "tiny"
    assert run.data.params["vocab.version"] == vocab.version
    assert "tuning_perplexity" in run.data.metrics and "unigram_perplexity" in run.data.metrics


def test_resuming_from_a_checkpoint_gives_the_same_next_steps(corpus, tmp_path) -> None:
    sequences, vocab = corpus
    base = dict(
        preset="tiny",
        batch_size=8,
        learning_rate=3e-3,
        shuffle=False,
        progress_bar=False,
        model_overrides={"dropout": 0.0},
    )
    straight = pretrain(
        sequences,
        vocab,
        PretrainConfig(max_epochs=2, **base),
        output_dir=tmp_path / "a",
        **_tracking(tmp_path),
    )
    after_first_epoch, _ = straight.epoch_checkpoints
    first = torch.load(after_first_epoch, weights_only=False)["state_dict"]
    resumed = pretrain(
        sequences,
        vocab,
        PretrainConfig(max_epochs=2, **base),
        output_dir=tmp_path / "c",
        resume_from=after_first_epoch,
        **_tracking(tmp_path),
    )
    a = type_of_model().from_pretrained(straight.model_dir).state_dict()
    c = type_of_model().from_pretrained(resumed.model_dir).state_dict()
    # the second epoch did change the weights, so matching after it means the resume was exact
    assert any(not torch.equal(a[k], first[f"model.{k}"]) for k in a)
    for key in a:
        torch.testing.assert_close(a[key], c[key], rtol=1e-5, atol=1e-6)
    assert straight.metrics["tuning_loss"] == pytest.approx(
        resumed.metrics["tuning_loss"], rel=1e-5
    )


def type_of_model():
    from ehrmamba.model import EHRMambaForPretraining

    return EHRMambaForPretraining


def test_a_run_cut_short_by_max_steps_still_reports_tuning_perplexity(corpus, tmp_path) -> None:
    sequences, vocab = corpus
    config = PretrainConfig(preset="tiny", max_steps=3, batch_size=4, progress_bar=False)
    lines: list[str] = []
    result = pretrain(
        sequences,
        vocab,
        config,
        output_dir=tmp_path / "out",
        progress_log=lines.append,
        **_tracking(tmp_path),
    )
    assert result.metrics["tuning_perplexity"] > 1.0
    assert "unigram_perplexity" in result.metrics
    # progress as log lines (what the Dagster run log shows): a header, then every step of 3
    assert lines[0] == "pretraining: 3 steps"
    assert [line.split(",")[0] for line in lines[1:]] == [
        "pretraining: step 1/3 (33%)",
        "pretraining: step 2/3 (67%)",
        "pretraining: step 3/3 (100%)",
    ]
    assert "left" in lines[1] and "left" not in lines[-1]
    assert all(" loss " in line and "s/step" in line for line in lines[1:])
