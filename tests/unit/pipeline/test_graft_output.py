"""The graft segment of the MRI pipelines and the side it is given (graft_output)."""

import numpy as np
import pytest
import SimpleITK as sitk

from service.pipeline.graft_output import graft_side


def _image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), origin=(-150.0, -100.0, 0.0), size=100):
    """A 3 mm grid whose bright body spans x -120..+120 mm (wholly in view at size 100)."""
    image = sitk.Image(size, 80, 10, sitk.sitkFloat32)
    image.SetSpacing((3.0, 3.0, 5.0))
    image.SetOrigin(origin)
    image.SetDirection(direction)
    values = np.zeros((10, 80, size), dtype=np.float32)
    for i in range(size):
        x = image.TransformIndexToPhysicalPoint((i, 0, 0))[0]
        if -120 <= x <= 120:
            values[:, 10:70, i] = 100.0
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(image)
    return out


def _blob_at(image: sitk.Image, x_mm: float) -> np.ndarray:
    mask = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=bool)
    index = image.TransformPhysicalPointToIndex((x_mm, 20.0, 20.0))
    mask[2:8, index[1] - 3:index[1] + 3, index[0] - 3:index[0] + 3] = True
    return mask


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1),
                                       (-1, 0, 0, 0, 1, 0, 0, 0, 1)])
def test_the_side_is_the_patients_whatever_the_column_direction(direction):
    origin = (-150.0, -100.0, 0.0) if direction[0] > 0 else (147.0, -100.0, 0.0)
    image = _image(direction, origin)
    assert graft_side(image, _blob_at(image, -70.0)) == "right"  # LPS: -x is the right
    assert graft_side(image, _blob_at(image, 70.0)) == "left"


def test_a_field_of_view_narrower_than_the_body_uses_the_isocentre():
    # 40 columns from x = -105 mm: the body fills the width, its centroid (-46 mm) is
    # no mid-line; a graft at x = -20 mm lies right of the isocentre.
    image = _image(origin=(-105.0, -100.0, 0.0), size=40)
    assert graft_side(image, _blob_at(image, -20.0)) == "right"
    assert graft_side(image, _blob_at(image, 6.0)) == "left"
    with pytest.raises(ValueError, match="empty"):
        graft_side(image, np.zeros((10, 80, 40), dtype=bool))
