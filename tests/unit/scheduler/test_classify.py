import pytest
from pydicom import uid

from service.config import ClassificationRules
from service.db.tables import SeriesRole
from service.scheduler.classify import SeriesFacts, choose_pipeline, classify_series

RULES = ClassificationRules()
MR = frozenset({str(uid.MRImageStorage)})


def facts(desc, *, modality="MR", sop=MR, temporal=0, protocol=None):
    return SeriesFacts("1.2.3", modality, desc, protocol, sop, 10, temporal)


@pytest.mark.parametrize("f, role", [
    (facts("DCE dyn 3D"), SeriesRole.DCE),
    (facts("ax vibe fs", temporal=6), SeriesRole.DCE),  # by temporal positions alone
    (facts("T2 TSE cor"), SeriesRole.T2),
    (facts("t2_haste_tra"), SeriesRole.T2),
    (facts("DCE SUB 3-1"), SeriesRole.OTHER_MR),  # subtraction images are excluded
    (facts("DCE MIP", temporal=4), SeriesRole.OTHER_MR),
    (facts("localizer"), SeriesRole.OTHER_MR),
    (facts("t1 vibe"), SeriesRole.T1),  # T1 without dynamics (issue 16)
    (facts("abdomen", modality="CT", sop=frozenset({str(uid.CTImageStorage)})), SeriesRole.CT),
    (facts("Kidney SEG", modality="SEG", sop=frozenset({str(uid.SegmentationStorage)})),
     SeriesRole.DERIVED),
    (facts("x", modality="US", sop=frozenset({"1.2.840.10008.5.1.4.1.1.6.1"})),
     SeriesRole.UNSUPPORTED),
    (facts(None, protocol="dce_kidney"), SeriesRole.DCE),
])
def test_classify(f, role):
    assert classify_series(f, RULES) is role


def test_custom_rules_change_the_role():
    rules = ClassificationRules(dce_patterns=("arterial",), t2_patterns=("fse",))
    assert classify_series(facts("Arterial phase"), rules) is SeriesRole.DCE
    assert classify_series(facts("DCE dyn 3D"), rules) is SeriesRole.OTHER_MR


def test_choose_pipeline():
    def choose(roles):
        return choose_pipeline(roles, mr_pipeline="p", ct_pipeline="c")

    assert choose({"1": SeriesRole.DCE, "2": SeriesRole.T2})[0] == "p"
    name, reason = choose({"1.2": SeriesRole.T2})
    assert name is None and "no DCE MR or CT" in reason and "1.2=t2" in reason
    assert choose({"9": SeriesRole.CT, "8": SeriesRole.DERIVED}) == ("c", "CT series present")
    # A study with DCE keeps the MRI pipeline, even with a CT series in it.
    assert choose({"9": SeriesRole.CT, "1": SeriesRole.DCE})[0] == "p"
