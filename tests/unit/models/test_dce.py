"""Tests of models.dce: the DCE volume fed to the graft method."""

import numpy as np
import pytest

from models.dce import DceVolume, combine_phases, network_inputs

PRE = np.full((2, 3, 3), 100.0)
EARLY = np.full((2, 3, 3), 400.0)
LATE = np.full((2, 3, 3), 200.0)


@pytest.mark.parametrize(("how", "expected"), [("last", 200.0), ("mean-post", 300.0),
                                               ("max-post", 400.0), ("phases", 200.0)])
def test_combinations_by_hand(how, expected):
    out = combine_phases([PRE, EARLY, LATE], how=how)
    assert out.dtype == np.float32
    assert np.all(out == expected)


def test_a_single_phase_is_returned_whatever_the_choice():
    for how in DceVolume:
        assert np.all(combine_phases([EARLY], how=how) == 400.0)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="no DCE phase"):
        combine_phases([], how="last")
    with pytest.raises(ValueError, match="different shapes"):
        combine_phases([PRE, np.zeros((2, 3, 4))], how="mean-post")
    with pytest.raises(ValueError):
        combine_phases([PRE], how="median")


def test_only_the_phases_mode_adds_channels():
    assert network_inputs(5, how="phases") == (1, 2, 3)
    assert network_inputs(2, how="phases") == ()
    assert network_inputs(1, how="phases") == ()
    assert network_inputs(5, how="last") == () == network_inputs(5, how="mean-post")
