"""Tests of service.cortex.model_files: manifest written, sha256 checked before loading."""

import json
import re

import pytest
import torch

from models.cortex_train import TrainedModel
from models.cortex_unet import CortexUNet, CortexUNetSpec
from service.cortex.model_files import (
    MANIFEST_NAME,
    load_cortex_ensemble,
    sha256_of,
    write_model_dir,
)
from service.errors import ModelFilesError

SPEC = CortexUNetSpec(width=2)


def _trained(n: int = 2) -> list[TrainedModel]:
    torch.manual_seed(0)
    return [TrainedModel(name=f"model_{i}", role="fold" if i == 0 else "all",
                         fold=0 if i == 0 else None,
                         state_dict=CortexUNet(SPEC).state_dict(), train_slices=8,
                         validation_slices=2 if i == 0 else 0, losses=[0.6, 0.4],
                         dice_per_epoch=[0.3, 0.5]) for i in range(n)]


@pytest.fixture
def model_dir(tmp_path):
    write_model_dir(tmp_path / "m", _trained(), spec=SPEC, training={"slices": 10})
    return tmp_path / "m"


def test_manifest_lists_architecture_hashes_and_metrics(model_dir):
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
    assert manifest["architecture"] == {"name": "cortex-residual-unet-2d", "version": "1",
                                        "width": 2, "levels": 5, "in_channels": 1}
    assert manifest["training"] == {"slices": 10}
    first, second = manifest["models"]
    assert first["sha256"] == sha256_of(model_dir / "model_0.pt")
    assert re.fullmatch(r"[0-9a-f]{64}", second["sha256"])
    assert first["validation_dice"] == 0.5 and second["training_dice"] == 0.5


def test_loaded_ensemble_reproduces_the_saved_networks(model_dir):
    ensemble = load_cortex_ensemble(model_dir)
    assert len(ensemble.models) == 2 and ensemble.spec == SPEC
    reference = CortexUNet(SPEC)
    reference.load_state_dict(_trained()[0].state_dict)
    x = torch.rand(1, 1, 32, 32)
    assert not ensemble.models[0].training
    loaded = ensemble.models[0].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())
    # Channels-last weights change the summation order, not the function.
    assert torch.allclose(ensemble.models[0](x), reference.eval()(x), atol=1e-5)


def test_changed_weight_file_is_refused_before_loading(model_dir):
    path = model_dir / "model_1.pt"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelFilesError, match=r"model_1\.pt: sha256 mismatch: manifest says"):
        load_cortex_ensemble(model_dir)


def test_missing_files_and_foreign_manifests_are_named(model_dir, tmp_path):
    (model_dir / "model_0.pt").unlink()
    with pytest.raises(ModelFilesError, match=r"model_0\.pt: weight file .* missing"):
        load_cortex_ensemble(model_dir)
    with pytest.raises(ModelFilesError, match="no manifest"):
        load_cortex_ensemble(tmp_path)
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
    manifest["architecture"]["name"] = "other-net"
    (model_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ModelFilesError, match="architecture 'other-net'"):
        load_cortex_ensemble(model_dir)
