"""C-FIND matching rules (PS3.4 C.2.2.2) on their own."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from service.dicom.matching import matches
from service.dicom.query import key_text


@pytest.mark.parametrize("pattern, value, vr, expected", [
    ("", "anything", "LO", True),            # universal
    ("*", None, "LO", True),
    ("", None, "LO", True),
    ("P1", None, "LO", False),               # a value the node does not know
    ("P1", "P1", "LO", True),                # single value
    ("P1", "p1", "LO", False),
    ("P*", "P1", "LO", True),                # wild cards
    ("P?", "P12", "LO", False),
    ("*2", "P12", "LO", True),
    ("a.b", "axb", "LO", False),              # regex characters are literal
    ("DOE^J*", "Doe^John", "PN", True),     # person names: case folded
    ("doe^john", "DOE^JOHN", "PN", True),
    ("1.2.3\\1.2.4", "1.2.4", "UI", True),   # list of UIDs
    ("1.2.3\\1.2.4", "1.2.5", "UI", False),
    ("1.2.*", "1.2.3", "UI", False),         # no wild cards in UIDs
    ("20260101-20261231", "20260615", "DA", True),  # ranges
    ("20260101-20261231", "20270101", "DA", False),
    ("20260101-", "20270101", "DA", True),
    ("-20251231", "20260101", "DA", False),
    ("1000-1200", "113015.123", "TM", True),  # on the digits given
    ("1000-1100", "113015", "TM", False),
    ("MR\\CT", "CT", "CS", True),            # several values: any
])
def test_matching(pattern, value, vr, expected):
    assert matches(pattern, value, vr) is expected


def test_a_key_of_several_values_matches_any_of_them():
    identifier = Dataset()
    identifier.Modality = ["MR", "SEG"]
    identifier.PatientID = ""
    identifier.StudyDate = "20260101-"
    texts = {e.keyword: key_text(e) for e in identifier}
    assert texts == {"Modality": "MR\\SEG", "PatientID": "", "StudyDate": "20260101-"}
    assert matches(texts["Modality"], "SEG", "CS") and not matches(texts["Modality"], "CT", "CS")
