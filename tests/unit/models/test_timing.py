"""models.timing: seconds charged to the step each lap names."""

import time

from models.timing import StepTimer


def test_laps_accumulate_by_step():
    timer = StepTimer()
    time.sleep(0.02)
    timer.lap("a")
    time.sleep(0.01)
    timer.lap("b")
    time.sleep(0.02)
    timer.lap("a")
    assert set(timer.seconds) == {"a", "b"}
    assert timer.seconds["a"] >= 0.04 and 0.01 <= timer.seconds["b"] < timer.seconds["a"]
