"""Issue 16: T1 (Dixon) series and the routing of studies without contrast."""

import pytest
from pydicom import uid

from service.config import ClassificationRules, ProcessingSettings
from service.db.tables import SeriesRole
from service.scheduler.classify import SeriesFacts, choose_pipeline, classify_series

RULES = ClassificationRules()
MR = frozenset({str(uid.MRImageStorage)})


def facts(desc, *, temporal=0, protocol=None):
    return SeriesFacts("1.2.3", "MR", desc, protocol, MR, 10, temporal)


@pytest.mark.parametrize("description", [
    "t1_vibe_dixon_tra_in", "t1_vibe_dixon_tra_opp", "t1_vibe_dixon_tra_W",
    "t1_vibe_dixon_tra_F", "T1 FLASH 2D in-phase", "T1 opposed phase", "Dixon water",
    "Dixon fat", "mDIXON ip", "LAVA-Flex", "T1W_FFE", "ax T1 pre", "WATER: T1 mDixon",
])
def test_t1_and_dixon_names(description):
    assert classify_series(facts(description), RULES) is SeriesRole.T1


@pytest.mark.parametrize("f, role", [
    (facts("t1 vibe dyn"), SeriesRole.DCE),  # DCE stays first
    (facts("t1_vibe_fs_tra", temporal=5), SeriesRole.DCE),
    (facts("T1 post contrast"), SeriesRole.DCE),
    (facts("t1 vibe dixon SUB"), SeriesRole.OTHER_MR),  # exclusions still first
    (facts("t2_tse_tra fat sat"), SeriesRole.T2),  # "fat" and "tse": the weighting says T2
    (facts("t1_tse_tra"), SeriesRole.T1),  # "tse" and "t1": T1
    (facts("HASTE cor"), SeriesRole.T2),
    (facts("diffusion b800"), SeriesRole.OTHER_MR),
])
def test_t1_does_not_take_other_roles(f, role):
    assert classify_series(f, RULES) is role


def test_custom_t1_patterns():
    rules = ClassificationRules(t1_patterns=("mprage",))
    assert classify_series(facts("MPRAGE"), rules) is SeriesRole.T1
    assert classify_series(facts("t1 vibe"), rules) is SeriesRole.OTHER_MR


def choose(roles, nocontrast="nc"):
    return choose_pipeline(roles, mr_pipeline="p", ct_pipeline="c",
                           mr_nocontrast_pipeline=nocontrast)


def test_studies_without_contrast_go_to_the_nocontrast_pipeline():
    assert ProcessingSettings().mr_nocontrast_pipeline == "mri-graft-nc"
    name, reason = choose({"1": SeriesRole.T2, "2": SeriesRole.OTHER_MR})
    assert name == "nc" and "t2" in reason
    assert choose({"1": SeriesRole.T1})[0] == "nc"  # T1 (Dixon) only
    assert choose({"1": SeriesRole.T1, "2": SeriesRole.T2})[0] == "nc"


def test_dce_and_ct_keep_their_pipelines():
    assert choose({"1": SeriesRole.DCE, "2": SeriesRole.T2, "3": SeriesRole.T1})[0] == "p"
    assert choose({"1": SeriesRole.CT, "2": SeriesRole.T2}) == ("c", "CT series present")
    name, reason = choose({"1": SeriesRole.OTHER_MR})
    assert name is None and "1=other-mr" in reason
    # Without a no-contrast pipeline, a T2-only study has none (the former behaviour).
    assert choose({"1": SeriesRole.T2}, nocontrast=None)[0] is None
