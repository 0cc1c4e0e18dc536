"""``kidney-node train cortex`` on a tiny NIfTI dataset."""

import json

import numpy as np
import SimpleITK as sitk
import torch

from service.cli import main
from service.cortex.model_files import load_cortex_ensemble


def _write_case(folder, name, *, with_kidneys, seed):
    """Two thin ellipsoidal kidneys (few coronal slices) with a cortex shell."""
    rng = np.random.default_rng(seed)
    shape = (40, 8, 90)  # (z, y, x) at 2 x 1 x 1.5 mm
    zz, yy, xx = np.indices(shape)
    hu = rng.normal(-60, 20, shape).astype(np.float32)
    kidneys = np.zeros(shape, np.uint8)
    for label, cx in [(1, 25), (2, 65)]:
        r = np.sqrt(((zz - 20) / 14) ** 2 + ((yy - 4) / 3) ** 2 + ((xx - cx) / 15) ** 2)
        kidneys[r <= 1] = label
        hu[r <= 1] = 60 + rng.normal(0, 10)
        hu[(r <= 1) & (r > 0.7)] = 180
    cortex = ((kidneys > 0) & (hu == 180)).astype(np.uint8)
    images = {"ct": hu, "cortex": cortex}
    if with_kidneys:
        images["kidneys"] = kidneys
    for suffix, arr in images.items():
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((1.5, 1.0, 2.0))
        img.SetDirection((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))  # RAS-stored, as NIfTI often is
        sitk.WriteImage(img, str(folder / f"{name}_{suffix}.nii.gz"))


def test_train_cortex_writes_weights_and_manifest(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = tmp_path / "data"
        data.mkdir()
        _write_case(data, "a", with_kidneys=True, seed=0)
        _write_case(data, "b", with_kidneys=False, seed=1)
        out = tmp_path / "model"
        assert main(["train", "cortex", str(data), "--out", str(out), "--epochs", "1",
                     "--width", "2", "--seed", "3"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "manifest.json" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["role"] for m in manifest["models"]] == ["fold"] * 5 + ["all"] * 2
    assert sorted(p.name for p in out.glob("*.pt")) == [f"model_{i}.pt" for i in range(7)]
    assert manifest["architecture"]["width"] == 2
    cases = {c["case"]: c for c in manifest["training"]["cases"]}
    assert cases["a"]["kidney_mask"] and not cases["b"]["kidney_mask"]
    assert cases["a"]["slices"] == 2 * 7  # two kidneys, 7 mm deep, 1 mm coronal slices
    assert cases["b"]["slices"] > 0
    assert all("validation_dice" in m for m in manifest["models"][:5])
    assert len(load_cortex_ensemble(out).models) == 7


def test_train_cortex_names_an_empty_folder(tmp_path, capsys):
    assert main(["train", "cortex", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "no case" in capsys.readouterr().err
