"""Log formats: one JSON object per line, a peer's newline and a traceback included."""

import json
import logging

from service.logs import JsonFormatter


def test_json_lines_keep_a_peers_newline_and_the_traceback_inside_one_line():
    record = logging.LogRecord("service.dicom.scp", logging.WARNING, __file__, 1,
                               "association rejected: calling AE %r", ("EVIL\nFAKE LINE",),
                               None)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        import sys
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "service.dicom.scp"
    assert entry["message"] == "association rejected: calling AE 'EVIL\\nFAKE LINE'"
    assert "ValueError: bad\nvalue" in entry["exception"]
    assert entry["time"].endswith("+00:00")
