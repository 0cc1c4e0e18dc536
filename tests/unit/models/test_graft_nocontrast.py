"""The T2-only graft method's region steps (:mod:`models.graft_nocontrast`)."""

import numpy as np

from models.graft_nocontrast import cut_appendages, grow_to_edge, restore_lips
from models.metrics import dice
from models.mr_localise import compactness

SPACING = (4.0, 1.5, 1.5)
SHAPE = (40, 140, 140)


def _grid_mm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y, x = np.indices(SHAPE).astype(float)
    return z * SPACING[0], y * SPACING[1], x * SPACING[2]


def _kidney() -> np.ndarray:
    """An ellipsoid graft of semi-axes 55 x 30 x 25 mm (about 170 ml), long axis along z."""
    z, y, x = _grid_mm()
    return ((z - 80) / 55) ** 2 + ((y - 100) / 30) ** 2 + ((x - 100) / 25) ** 2 <= 1.0


def _bowel_loop() -> np.ndarray:
    """A loop of 11 mm radius running front to back past the kidney's side, pressed 6 mm
    into it and standing out 40 mm in front of it and behind it."""
    z, y, x = _grid_mm()
    return ((z - 80) ** 2 + (x - 136) ** 2 <= 11.0 ** 2) & (y > 30) & (y < 170)


def test_a_bowel_loop_pressed_against_the_graft_is_cut_off():
    kidney, loop = _kidney(), _bowel_loop()
    region = kidney | loop
    assert compactness(region, SPACING) < 0.85  # what a grown T2 region looks like
    out = cut_appendages(region, spacing=SPACING)
    assert dice(out, kidney) > 0.95, dice(out, kidney)
    assert (out & loop & ~kidney).sum() < 0.1 * (loop & ~kidney).sum()
    assert compactness(out, SPACING) >= 0.9


def _kidney_with_sinus() -> np.ndarray:
    """:func:`_kidney` less its renal sinus: an ellipsoid of fat half the kidney's size,
    opening medially (towards larger x) at the hilum, as the synthetic graft's."""
    z, y, x = _grid_mm()
    sinus = ((z - 80) / 30) ** 2 + ((y - 100) / 14) ** 2 + ((x - 115) / 14) ** 2 <= 1.0
    return _kidney() & ~sinus


def test_a_lip_cut_with_a_loop_is_given_back_and_the_loop_is_not():
    # What the opening's cut does to a grown T2 region around a sinus (synthetic seeds
    # 300-309): the anterior lip went with the bowel loop; the lip lies inside the
    # kidney's ellipsoid, the loop beyond it.
    kidney, loop = _kidney_with_sinus(), _bowel_loop()
    region = kidney | loop
    z, y, x = _grid_mm()
    lip = kidney & (x > 100) & (y < 90)
    kept = region & ~lip & ~(loop & ~kidney)
    assert lip.sum() > 0.05 * kidney.sum()
    out = restore_lips(region, kept, spacing=SPACING)
    # most of it (0.62 here: the ellipsoid of a kidney short of its lip is short of it)
    assert (out & lip).sum() >= 0.5 * lip.sum(), (out & lip).sum() / lip.sum()
    assert (out & loop & ~kidney).sum() < 0.1 * (loop & ~kidney).sum()
    assert np.array_equal(restore_lips(kidney, kidney, spacing=SPACING), kidney)

def test_a_whole_kidney_is_left_as_it_is():
    kidney = _kidney()
    assert np.array_equal(cut_appendages(kidney, spacing=SPACING), kidney)
    # with a shallow bulge (a pole's lobulation) it is compact enough to be left too
    z, y, x = _grid_mm()
    bulge = (z - 80) ** 2 + (y - 100) ** 2 + (x - 122) ** 2 <= 8.0 ** 2
    bumpy = kidney | bulge
    assert np.array_equal(cut_appendages(bumpy, spacing=SPACING), bumpy)


def _t2_image(kidney: np.ndarray) -> np.ndarray:
    """Cortex (550) in fat (450), as on the synthetic T2, with noise of 20."""
    image = np.where(kidney, 550.0, 450.0).astype(np.float32)
    return image + np.random.default_rng(3).normal(0.0, 20.0, image.shape).astype(np.float32)


def test_a_region_short_of_the_kidney_edge_is_grown_to_it():
    kidney = _kidney()
    z, y, x = _grid_mm()
    short = ((z - 80) / 53) ** 2 + ((y - 100) / 28) ** 2 + ((x - 100) / 23) ** 2 <= 1.0
    image = _t2_image(kidney)
    grown = grow_to_edge(short, image, spacing=SPACING)
    assert not (short & ~grown).any()  # nothing removed
    assert dice(short, kidney) < 0.93 < dice(grown, kidney), (dice(short, kidney),
                                                             dice(grown, kidney))
    # at the edge already: it barely moves, and never leaks into the fat
    again = grow_to_edge(kidney, image, spacing=SPACING)
    assert again.sum() < 1.05 * kidney.sum()


def test_a_grown_region_unlike_a_kidney_is_doubted_and_a_kidney_is_not():
    from models.graft_nocontrast import KIDNEY_SHAPED, NoContrastResult
    from models.mr_localise import LocalisedKidney, kidney_likeness
    from models.roi import RegionOfInterest

    kidney = _kidney()
    half = kidney & (np.indices(SHAPE)[0] * SPACING[0] > 95)  # the upper pole alone
    likeness = {name: kidney_likeness(mask, SPACING, volume_ml=(100.0, 300.0))
                for name, mask in (("kidney", kidney), ("pole", half))}
    assert likeness["kidney"] > 0.9 > KIDNEY_SHAPED > likeness["pole"]
    roi = RegionOfInterest(start=(0, 0, 0), stop=SHAPE)
    seed = LocalisedKidney(mask=kidney, roi=roi, volume_ml=170.0, score=0.5)

    def result(value: float | None) -> NoContrastResult:
        return NoContrastResult(mask=kidney, roi=roi, localised=seed,
                                working_spacing_zyx=SPACING, working_shape=SHAPE,
                                clustering=None, channels=1, likeness=value)

    assert result(likeness["pole"]).doubts() == ("not-kidney-shaped",)
    assert result(likeness["kidney"]).doubts() == ()
    assert result(None).doubts() == ()  # the clustering's mask: no grown region to judge
