"""The node's installed cortex ensemble: checked on every use, loaded once per process."""

import pytest

from service.cortex.installed import installed_ensemble, weights_id
from service.errors import ModelFilesError
from tests.ct_cases import tiny_model_dir


def test_loaded_once_then_checked_on_every_use(tmp_path):
    folder = tiny_model_dir(tmp_path / "m")
    first = installed_ensemble(folder, device="cpu")
    assert installed_ensemble(folder, device="cpu") is first
    assert len(weights_id(first)) == 12
    weights = folder / "model_0.pt"
    weights.write_bytes(weights.read_bytes()[:-1])
    with pytest.raises(ModelFilesError, match=r"model_0\.pt: sha256 mismatch: manifest says"):
        installed_ensemble(folder, device="cpu")


def test_a_new_model_folder_is_loaded_again(tmp_path):
    folder = tiny_model_dir(tmp_path / "m")
    first = installed_ensemble(folder, device="cpu")
    tiny_model_dir(folder, n=3)  # retrained in place: a new manifest
    second = installed_ensemble(folder, device="cpu")
    assert second is not first and len(second.models) == 3
    assert weights_id(second) != weights_id(first)
