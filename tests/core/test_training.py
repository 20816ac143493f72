"""Trainer: protocol, early stopping with copies, penalty on CPU, cancel, divergence."""
import math

import numpy as np
import pytest
import torch

from core.datasets import DatasetError, generate
from core.training import CancelToken, TrainConfig, Trainer, TrainingDiverged, train

SPEC = dict(name="rgroup", group="C4", in_frames=3, hidden_dim=8, num_layers=3, num_banks=2,
            alpha=0.0)
QUICK = dict(epochs=3, batches_per_epoch=6, batch_size=4, lr=3e-3, valid_samples=16, threads=1)


@pytest.fixture(scope="module")
def data():
    return generate("rotation", grid=12, steps=40, sims=8, device="cpu")


def test_loss_decreases(data):
    _, result = train(SPEC, data, dict(QUICK, epochs=6))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["valid_rmse"] < result.history[0]["valid_rmse"]
    assert result.stopped == "done" and result.best_epoch is not None


def test_early_stopping_keeps_a_copy_of_the_best_epoch(data):
    snapshots = {}
    trainer = None

    def on_epoch(info):
        snapshots[info["epoch"]] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    # a growing learning rate makes validation worse after the first epochs
    trainer = Trainer(SPEC, data, dict(QUICK, epochs=8, lr=1e-2, lr_decay=4.0, patience=2),
                      on_epoch=on_epoch)
    result = trainer.fit()
    assert result.stopped == "early_stop"
    assert result.best_epoch < result.history[-1]["epoch"]
    best = snapshots[result.best_epoch]
    assert all(torch.equal(result.best_state[k], best[k]) for k in best)
    assert not all(torch.equal(result.best_state[k], v) for k, v in trainer.model.state_dict().items())
    with torch.no_grad():  # the copy does not follow the live model
        for p in trainer.model.parameters():
            p.add_(1.0)
    assert all(torch.equal(result.best_state[k], best[k]) for k in best)


def test_penalty_changes_training_on_cpu(data):
    spreads = {}
    for alpha in (0.0, 10.0):
        model, result = train(dict(SPEC, alpha=alpha), data, dict(QUICK, device="cpu"))
        w = torch.stack(list(model.relaxed_weights().values())).detach()
        spreads[alpha] = float((w - w.mean(-1, keepdim=True)).abs().mean())
        assert result.device == "cpu"
        if alpha:
            assert max(h["penalty"] for h in result.history) > 0
    assert spreads[0.0] > 0 and spreads[10.0] < spreads[0.0]


def test_cancel_stops_within_one_batch(data):
    token, seen = CancelToken(), []

    def on_batch(info):
        seen.append(info["batch"])
        if len(seen) == 3:
            token.cancel()

    result = Trainer(SPEC, data, QUICK, on_batch=on_batch, cancel=token).fit()
    assert result.stopped == "cancelled" and len(seen) == 3
    assert result.last_state and all(torch.isfinite(v).all() for v in result.last_state.values()
                                     if v.is_floating_point())


def test_nan_data_diverges_with_readable_error_and_good_weights(data):
    bad = data.copy(deep=True)
    bad["velocity"].values[:, 5] = np.nan
    with pytest.raises(TrainingDiverged, match="loss became nan") as err:
        Trainer(SPEC, bad, QUICK).fit()
    state = err.value.result.last_state
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_huge_learning_rate_diverges(data):
    with pytest.raises(TrainingDiverged) as err:
        Trainer(dict(SPEC, name="conv", group=None, num_banks=1), data,
                dict(QUICK, lr=1e12, epochs=5)).fit()
    assert err.value.result.stopped == "diverged"


def test_threads_are_capped_and_restored(data):
    before = torch.get_num_threads()
    seen = []
    Trainer(SPEC, data, dict(QUICK, epochs=1, threads=1),
            on_batch=lambda info: seen.append(torch.get_num_threads())).fit()
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_bad_settings_and_data(data):
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig.from_dict(dict(epochs=0))
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_dict(dict(epoch=3))
    with pytest.raises(DatasetError, match="grid"):
        Trainer(dict(SPEC, grid=[64, 64]), data, QUICK)
    with pytest.raises(DatasetError, match="no windows"):
        Trainer(dict(SPEC, in_frames=30), data, QUICK)


def test_seeds_reproduce(data):
    a = train(SPEC, data, dict(QUICK, epochs=1))[1].history[0]["train_loss"]
    b = train(SPEC, data, dict(QUICK, epochs=1))[1].history[0]["train_loss"]
    assert math.isclose(a, b, rel_tol=0, abs_tol=0)


def _split(model):
    relaxed = {id(p) for p in model.relaxed_weights().values()}
    return ({n: p.detach().clone() for n, p in model.named_parameters() if id(p) in relaxed},
            {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in relaxed})


def test_train_params_freeze_one_kind(data):
    for kind in ("shared", "relaxed"):
        trainer = Trainer(SPEC, data, dict(QUICK, epochs=1, train_params=kind))
        relaxed0, shared0 = _split(trainer.model)
        trainer.fit()
        relaxed1, shared1 = _split(trainer.model)
        frozen, trained = (relaxed0, relaxed1) if kind == "shared" else (shared0, shared1)
        assert all(torch.equal(frozen[k], trained[k]) for k in frozen), kind
        moving = (shared0, shared1) if kind == "shared" else (relaxed0, relaxed1)
        assert any(not torch.equal(moving[0][k], moving[1][k]) for k in moving[0]), kind


def test_relaxed_weights_get_their_own_learning_rate(data):
    trainer = Trainer(SPEC, data, dict(QUICK, relaxed_lr=0.05))
    groups = {g["name"]: g for g in trainer._param_groups()}
    assert groups["relaxed"]["lr"] == 0.05 and groups["shared"]["lr"] == QUICK["lr"]
    relaxed = {id(p) for p in trainer.model.relaxed_weights().values()}
    assert {id(p) for p in groups["relaxed"]["params"]} == relaxed
    # a strict model has nothing to train with train_params="relaxed"
    with pytest.raises(ValueError, match="relaxed weights"):
        Trainer(dict(SPEC, name="gconv", num_banks=1), data,
                dict(QUICK, train_params="relaxed")).fit()


@pytest.mark.parametrize("bad", [dict(relaxed_lr=-1.0), dict(relaxed_lr=float("nan")),
                                 dict(train_params="banks"), dict(init_weights=3)])
def test_new_settings_are_validated(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig.from_dict(bad)


def test_init_weights_start_from_a_run_or_a_file(data, tmp_path):
    from core.runs import RunStore

    model, result = train(SPEC, data, dict(QUICK, epochs=1))
    run = RunStore(tmp_path / "runs").create(model.spec, QUICK, __file__)
    run.save_weights(result.best_state)
    for source in (run.path, run.weights_path()):
        trainer = Trainer(SPEC, data, dict(QUICK, init_weights=str(source)))
        assert all(torch.equal(trainer.model.state_dict()[k], v)
                   for k, v in result.best_state.items())
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ValueError, match="not a safetensors file"):
        Trainer(SPEC, data, dict(QUICK, init_weights=str(tmp_path / "pickle.pt")))
