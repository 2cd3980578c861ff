"""The training loop and its checkpoints, in-process on small synthetic data (no MLflow)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ctflow_trainer.checkpoints import Checkpointer, checkpoint_name
from ctflow_trainer.config import ConfigError, Hyperparameters
from ctflow_trainer.export import export_model
from ctflow_trainer.training import Trainer, TrainingDiverged

HP = Hyperparameters(epochs=4, patience=50, hidden_units=32, batch_size=16, seed=7)


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(n: int = 240, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int64)
    x = (rng.random((n, 1, 4, 4)) * 0.3 + y[:, None, None, None] * 0.3).astype(np.float32)
    return x[:200], y[:200], x[200:], y[200:]


def _trainer(hp: Hyperparameters = HP) -> Trainer:
    return Trainer(hp, *_data(), num_classes=3, device=torch.device("cpu"))


def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)


def test_same_seed_gives_identical_histories() -> None:
    """Same seed, data and hyperparameters: the same numbers, epoch by epoch."""
    assert _trainer().fit().history == _trainer().fit().history


def test_a_different_seed_gives_a_different_history() -> None:
    """The seed matters (so the determinism test above can fail)."""
    assert _trainer().fit().history != _trainer(replace(HP, seed=8)).fit().history


def test_resuming_from_a_checkpoint_continues_exactly() -> None:
    """Two epochs, checkpoint, a fresh trainer resumes: identical to four uninterrupted epochs."""
    straight = _trainer().fit()
    first = _trainer(replace(HP, epochs=2))
    first.fit()
    state = _roundtrip(first.state_dict())
    resumed = _trainer()
    resumed.load_state_dict(state)
    resumed.progress.finished = False  # the first run stopped only because its budget was 2 epochs
    assert resumed.fit().history == straight.history


def test_early_stopping_keeps_the_best_weights() -> None:
    """Validation loss that stops improving ends training after `patience` epochs; best ones win."""
    hp = replace(HP, epochs=60, patience=2, lr=0.05)
    trainer = _trainer(hp)
    progress = trainer.fit()
    assert progress.epoch < 60 and progress.epoch - progress.best_epoch == 2
    best = trainer.best_model()
    trainer.model.load_state_dict(best.state_dict())
    assert trainer.evaluate()["val_loss"] == pytest.approx(progress.best["val_loss"])


def test_a_training_that_diverged_has_no_best_epoch_and_says_so() -> None:
    """NaN weights: no epoch's validation loss is finite, so there is nothing worth exporting, and asking
    for the best epoch names the cause instead of failing on a missing key."""
    trainer = _trainer(replace(HP, epochs=3, patience=2))
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.fill_(float("nan"))
    progress = trainer.fit()
    assert progress.best_epoch == 0 and progress.epoch == 2  # stopped by patience: nothing improved
    with pytest.raises(TrainingDiverged, match="none of 2 epoch"):
        _ = progress.best


def test_checkpointer_keeps_the_two_newest_and_loads_the_latest(tmp_path: Path) -> None:
    """Forced saves at epochs 1..3 leave epochs 2 and 3; loading returns epoch 3."""
    trainer = _trainer()
    checkpointer = Checkpointer(str(tmp_path), {"run_id": "r1"})
    for epoch in (1, 2, 3):
        assert checkpointer.maybe_save(epoch, trainer.state_dict, "mlflow-run", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(2), checkpoint_name(3)]
    state = Checkpointer(str(tmp_path), {"run_id": "r1"}).load_latest()
    assert state is not None and (state["epoch"], state["mlflow_run_id"]) == (3, "mlflow-run")


def test_a_torn_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    """An unreadable newest file is skipped, not fatal."""
    checkpointer = Checkpointer(str(tmp_path), {"run_id": "r1"})
    checkpointer.maybe_save(1, _trainer().state_dict, None, force=True)
    (tmp_path / checkpoint_name(2)).write_bytes(b"not a checkpoint")
    state = Checkpointer(str(tmp_path), {"run_id": "r1"}).load_latest()
    assert state is not None and state["epoch"] == 1


def test_another_jobs_checkpoint_is_refused(tmp_path: Path) -> None:
    """A checkpoint folder shared with a different run fails loudly instead of mixing runs."""
    Checkpointer(str(tmp_path), {"run_id": "r1"}).maybe_save(1, _trainer().state_dict, None, force=True)
    with pytest.raises(ConfigError, match="another job"):
        Checkpointer(str(tmp_path), {"run_id": "r2"}).load_latest()


def test_checkpoints_are_skipped_when_epochs_are_shorter_than_the_write_budget(
    tmp_path: Path,
) -> None:
    """Right after a write, an unforced save waits (cost/budget); a forced one never does."""
    checkpointer = Checkpointer(str(tmp_path), {"run_id": "r1"}, budget=1e-9)
    state = _trainer().state_dict
    assert checkpointer.maybe_save(1, state, None) is True  # the first is always written
    assert checkpointer.maybe_save(2, state, None) is False
    assert checkpointer.maybe_save(3, state, None, force=True) is True


def test_exported_torchscript_matches_the_eager_model(tmp_path: Path) -> None:
    """model.pt (TorchScript) gives the eager model's logits; state_dict.pt and config exist too."""
    trainer = _trainer()
    trainer.fit()
    model = trainer.best_model()
    export_model(model, tmp_path, hp=HP, input_shape=(1, 4, 4), num_classes=3, pipeline="p", run_id="r")
    x = torch.from_numpy(_data()[2])
    with torch.no_grad():
        assert torch.equal(torch.jit.load(str(tmp_path / "model.pt"))(x), model(x))
    assert set(torch.load(tmp_path / "state_dict.pt", weights_only=True)) == set(model.state_dict())
    assert (tmp_path / "model_config.json").read_text().count('"class_labels"') == 1
