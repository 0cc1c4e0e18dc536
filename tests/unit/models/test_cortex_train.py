"""Tests of models.cortex_train: a tiny ensemble learns synthetic cortex rings."""

import numpy as np
import pytest
import torch

from models.cortex_ensemble import aggregate, predict_slices
from models.cortex_train import SliceSet, TrainConfig, make_folds, train_ensemble
from models.cortex_unet import CortexUNet, CortexUNetSpec
from models.metrics import dice


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: thread hand-offs cost more than they give
    yield
    torch.set_num_threads(threads)


def _rings(n: int, rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Noisy slices of an elliptic cortex ring around a darker medulla, and the ring masks."""
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.uniform(24, 40, 2)
        a, b, theta = rng.uniform(14, 22), rng.uniform(9, 14), rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)) / a
        v = (-(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)) / b
        r = np.hypot(u, v)
        inner = rng.uniform(0.55, 0.7)
        cortex, medulla = (r <= 1) & (r > inner), r <= inner
        image = 0.35 + 0.45 * cortex + 0.15 * medulla + rng.normal(0, 0.08, r.shape)
        images.append(np.clip(image, 0, 1).astype(np.float32))
        masks.append(cortex.astype(np.uint8))
    return np.stack(images), np.stack(masks)


def _models(trained, spec):
    nets = []
    for t in trained:
        net = CortexUNet(spec)
        net.load_state_dict(t.state_dict)
        nets.append(net.eval())
    return nets


def test_tiny_ensemble_loss_falls_and_beats_chance():
    rng = np.random.default_rng(0)
    images, masks = _rings(60, rng)
    data = SliceSet(images, masks, np.repeat(np.arange(6), 10))
    spec = CortexUNetSpec(width=4)
    # The paper's lr of 1e-4 needs far more steps than a unit test can afford.
    config = TrainConfig(spec=spec, epochs=12, lr=3e-3, fold_models=2, full_models=1, seed=1)
    trained = train_ensemble(data, config)
    assert [(t.role, t.fold) for t in trained] == [("fold", 0), ("fold", 1), ("all", None)]
    assert [t.validation_slices for t in trained] == [30, 30, 0]
    for t in trained:
        print(t.name, "loss", np.round(t.losses, 3), "dice", np.round(t.dice_per_epoch, 3))
        assert t.losses[-1] < 0.7 * t.losses[0]
    test_images, test_masks = _rings(20, np.random.default_rng(99))
    truth = test_masks.astype(bool)
    probs = predict_slices(_models(trained, spec), test_images)
    _, mask = aggregate(probs)
    ensemble = dice(mask, truth)
    chance = max(dice(np.ones_like(truth), truth), dice(np.zeros_like(truth), truth))
    singles = [dice(p > 0.5, truth) for p in probs]
    print("ensemble Dice", round(ensemble, 3), "single", np.round(singles, 3),
          "all-ones", round(chance, 3))
    assert ensemble > 0.6 and ensemble > chance + 0.3


def test_training_is_deterministic_given_the_seed():
    images, masks = _rings(12, np.random.default_rng(1), size=32)
    data = SliceSet(images, masks, np.arange(12))
    config = TrainConfig(spec=CortexUNetSpec(width=2), epochs=1, fold_models=0,
                         full_models=1, seed=5)
    first, second = train_ensemble(data, config), train_ensemble(data, config)
    other = train_ensemble(data, TrainConfig(spec=CortexUNetSpec(width=2), epochs=1,
                                             fold_models=0, full_models=1, seed=6))
    a, b, c = first[0].state_dict, second[0].state_dict, other[0].state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_folds_split_cases_not_slices():
    groups = np.repeat(np.arange(7), 4)
    folds = make_folds(groups, 5, np.random.default_rng(0))
    assert sorted(np.concatenate(folds).tolist()) == list(range(28))
    seen = [set(groups[f]) for f in folds]
    assert all(s and not (s & t) for i, s in enumerate(seen) for t in seen[i + 1:])


def test_config_refuses_a_single_fold_model():
    with pytest.raises(ValueError, match="fold models"):
        TrainConfig(fold_models=1)
