"""Training of the cortex ensemble (paper: "Network architecture", "ensemble aggregation").

Five networks are trained on random folds of the training slices and two on all of them
(the paper's seven). Every network: Adam, learning rate 1e-4, batches of 10 slices,
binary cross-entropy (the loss the paper plots; it mentions no Dice loss), random
translation, rotation, zoom, noise, brightness and contrast
(:func:`models.cortex_data.augment_pair`), from PyTorch's default initialisation (the
paper's COCO pre-training is not reproduced).

Folds are drawn over cases (``groups``), so no case has slices on both sides, as long as
there are at least as many cases as folds; with fewer cases they are drawn over slices
(and a warning says so). A fold network's validation Dice is computed on its held-out
fold after every epoch, over all the held-out pixels at once, at threshold 0.5; a network
trained on all data has no held-out slices and reports its Dice on the (unaugmented)
training slices instead, labelled as such.

Determinism: weights, batch order and augmentation derive from ``seed`` only (torch's
generator inside ``torch.random.fork_rng``, numpy generators from a ``SeedSequence``); on
the CPU the same data and config give the same weights. Nothing is read from or written
to disk: the caller saves the returned state dicts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from models.cortex_data import AugmentConfig, augment_pair
from models.cortex_unet import CortexUNet, CortexUNetSpec, cortex_probability
from models.metrics import dice

__all__ = [
    "SliceSet",
    "TrainConfig",
    "TrainedModel",
    "make_folds",
    "train_ensemble",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceSet:
    """Training slices: ``images`` (N, H, W) in [0, 1], ``masks`` (N, H, W) 0/1, ``groups``
    (N,) the case index of each slice."""

    images: np.ndarray
    masks: np.ndarray
    groups: np.ndarray

    def __post_init__(self) -> None:
        if (self.images.ndim != 3 or self.images.shape != self.masks.shape
                or self.groups.shape != (self.images.shape[0],)):
            raise ValueError(f"SliceSet shapes disagree: images {self.images.shape}, masks "
                             f"{self.masks.shape}, groups {self.groups.shape}")
        if self.images.shape[0] == 0:
            raise ValueError("SliceSet holds no slice")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the paper's where it gives them."""

    spec: CortexUNetSpec = field(default_factory=CortexUNetSpec)
    epochs: int = 30
    lr: float = 1e-4
    batch_size: int = 10
    fold_models: int = 5
    full_models: int = 2
    seed: int = 0
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    threshold: float = 0.5
    device: str = "cpu"
    log_every: int = 50  # batches between progress lines within an epoch

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.log_every < 1:
            raise ValueError("epochs, batch_size, log_every >= 1 and lr > 0 expected: "
                             f"{self!r}")
        if self.fold_models < 0 or self.full_models < 0 or self.fold_models == 1 or (
                self.fold_models + self.full_models == 0):
            raise ValueError("need at least one model, and 0 or >= 2 fold models, got "
                             f"{self.fold_models} fold + {self.full_models} full")


@dataclass
class TrainedModel:
    """One network of the ensemble and how its training went."""

    name: str
    role: str  # "fold" or "all"
    fold: int | None
    state_dict: dict[str, torch.Tensor]
    train_slices: int
    validation_slices: int
    losses: list[float]  # mean BCE per epoch
    dice_per_epoch: list[float]  # validation Dice (fold) or training Dice (all)

    @property
    def dice(self) -> float:
        """Dice after the last epoch (validation for fold models, training otherwise)."""
        return self.dice_per_epoch[-1]


def make_folds(groups: np.ndarray, n_folds: int, rng: np.random.Generator
               ) -> list[np.ndarray]:
    """Random folds: ``n_folds`` arrays of held-out slice indices, over cases if possible."""
    groups = np.asarray(groups)
    cases = np.unique(groups)
    if len(cases) >= n_folds:
        shuffled = rng.permutation(cases)
        return [np.flatnonzero(np.isin(groups, part))
                for part in np.array_split(shuffled, n_folds)]
    logger.warning("%d cases for %d folds: folds drawn over slices, a case can be on both "
                   "sides", len(cases), n_folds)
    return [np.sort(part) for part in np.array_split(rng.permutation(len(groups)), n_folds)]


def _dice_on(model: nn.Module, data: SliceSet, idx: np.ndarray, threshold: float,
             device: str) -> float:
    pred = np.zeros((len(idx), *data.images.shape[1:]), dtype=bool)
    for start in range(0, len(idx), 32):
        batch = torch.from_numpy(data.images[idx[start:start + 32], None].astype(np.float32))
        prob = cortex_probability(model, batch.to(device))[:, 0].cpu().numpy()
        pred[start:start + 32] = prob > threshold
    return dice(pred, data.masks[idx].astype(bool))


def _batch(data: SliceSet, idx: np.ndarray, rng: np.random.Generator,
           augment: AugmentConfig | None) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = data.images[idx], data.masks[idx]
    if augment is not None:
        pairs = [augment_pair(i, m, rng, augment) for i, m in zip(images, masks, strict=True)]
        images = np.stack([p[0] for p in pairs])
        masks = np.stack([p[1] for p in pairs])
    return (torch.from_numpy(np.ascontiguousarray(images[:, None], dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(masks[:, None], dtype=np.float32)))


def _train_one(data: SliceSet, train_idx: np.ndarray, val_idx: np.ndarray, *,
               config: TrainConfig, seed: np.random.SeedSequence, name: str
               ) -> tuple[dict[str, torch.Tensor], list[float], list[float]]:
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed.generate_state(1)[0]))
        model = CortexUNet(config.spec).to(config.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    score_idx = val_idx if len(val_idx) else train_idx
    losses: list[float] = []
    dices: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(train_idx)
        total, n = 0.0, 0
        n_batches = -(-len(order) // config.batch_size)
        for b, start in enumerate(range(0, len(order), config.batch_size), start=1):
            x, y = _batch(data, order[start:start + config.batch_size], rng, config.augment)
            optimiser.zero_grad()
            loss = loss_fn(model(x.to(config.device)), y.to(config.device))
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(x)
            n += len(x)
            if b % config.log_every == 0:
                logger.info("%s epoch %d: batch %d/%d, loss %.4f", name, epoch, b, n_batches,
                            total / n)
        losses.append(total / n)
        dices.append(_dice_on(model, data, score_idx, config.threshold, config.device))
        logger.info("%s epoch %d/%d: loss %.4f, %s Dice %.3f (%.0f s)", name, epoch,
                    config.epochs, losses[-1], "validation" if len(val_idx) else "training",
                    dices[-1], time.perf_counter() - t0)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return state, losses, dices


def train_ensemble(data: SliceSet, config: TrainConfig | None = None) -> list[TrainedModel]:
    """Train the fold networks, then the networks on all data.

    Parameters
    ----------
    data : SliceSet
        Normalised slices, cortex masks and case indices.
    config : TrainConfig, optional
        The paper's settings when omitted (5 fold + 2 full models, width 16).

    Returns
    -------
    list of TrainedModel
        ``config.fold_models`` fold networks (``model_0`` .. ), then the full ones.
    """
    cfg = config or TrainConfig()
    if cfg.fold_models > data.images.shape[0]:
        raise ValueError(f"{data.images.shape[0]} slices cannot make {cfg.fold_models} folds")
    root = np.random.SeedSequence(cfg.seed)
    fold_seed, *model_seeds = root.spawn(1 + cfg.fold_models + cfg.full_models)
    everything = np.arange(data.images.shape[0])
    folds = (make_folds(data.groups, cfg.fold_models, np.random.default_rng(fold_seed))
             if cfg.fold_models else [])
    plan: list[tuple[str, int | None, np.ndarray]] = [("fold", k, v) for k, v in enumerate(folds)]
    plan += [("all", None, np.array([], dtype=int))] * cfg.full_models
    trained = []
    for i, ((role, fold, val_idx), seed) in enumerate(zip(plan, model_seeds, strict=True)):
        name = f"model_{i}"
        train_idx = np.setdiff1d(everything, val_idx)
        logger.info("training %s (%d/%d, %s%s): %d training, %d validation slices", name,
                    i + 1, len(plan), role, "" if fold is None else f" {fold}",
                    len(train_idx), len(val_idx))
        state, losses, dices = _train_one(data, train_idx, val_idx, config=cfg, seed=seed,
                                          name=name)
        trained.append(TrainedModel(name=name, role=role, fold=fold, state_dict=state,
                                    train_slices=len(train_idx),
                                    validation_slices=len(val_idx), losses=losses,
                                    dice_per_epoch=dices))
    return trained
