"""The cortex benchmark's bookkeeping: disjoint seeds and the target checks."""

import pytest

from benchmarks.cortex_eval import case_seeds, summarise

MANIFEST = {"models": [{"name": f"model_{i}"} for i in range(3)]}


def test_training_and_test_seeds_are_disjoint_across_runs():
    train, test = case_seeds(0, 12, 4)
    assert len(train) == 12 and len(test) == 4
    assert not set(train) & set(test)
    train1, test1 = case_seeds(1, 12, 4)
    assert not (set(train) | set(test)) & (set(train1) | set(test1))
    with pytest.raises(ValueError):
        case_seeds(0, 0, 4)


def _case(ensemble, singles, seconds, kidney_seconds=10.0):
    """A test case's record; the 60 s target is on kidneys + ensemble (total_seconds)."""
    return {"ensemble_dice": ensemble, "single_dice": singles, "ceiling_dice": 0.98,
            "kidney_seconds": kidney_seconds, "inference_seconds": seconds,
            "total_seconds": kidney_seconds + seconds,
            "kidney_dice": {"right": 0.9, "left": None},
            "kidneys_found": {"right": True, "left": False}}


def test_summary_checks_each_target():
    cases = [_case(0.90, [0.88, 0.89, 0.85], 20.0), _case(0.88, [0.86, 0.87, 0.90], 30.0)]
    s = summarise(cases, MANIFEST, 100.0)
    assert s["ensemble_mean_dice"] == pytest.approx(0.89)
    assert s["best_single"] == "model_1"
    assert s["best_single_mean_dice"] == pytest.approx(0.88)
    assert all(s["checks"].values())
    assert s["kidney_mean_dice"] == {"right": pytest.approx(0.9), "left": None}
    assert s["kidneys_not_found"] == 2
    slow = summarise([_case(0.86, [0.87, 0.80, 0.80], 55.0)], MANIFEST, None)
    assert not any(slow["checks"].values())
    assert slow["train_seconds"] is None
