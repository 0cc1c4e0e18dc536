"""Reference receiver for ``benchmarks/ingest.py``: pynetdicom alone, as the node uses it
(datasets streamed to a file, the node's reception switches and socket options), storing
each file under its SOP Instance UID and indexing nothing: the ceiling the node's own work
(header check, fsync, index) is measured against.

    python -m benchmarks.bare_scp PORT FOLDER
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from pynetdicom import AE, _config, evt
from pynetdicom.events import Event

from service.dicom.contexts import scp_contexts
from service.dicom.net import NODELAY_HANDLER, configure_reception


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port, folder = int(args[0]), Path(args[1])
    folder.mkdir(parents=True, exist_ok=True)
    _config.STORE_RECV_CHUNKED_DATASET = True
    tempfile.tempdir = str(folder)
    configure_reception()

    def store(event: Event) -> int:
        os.replace(event.dataset_path,
                   folder / f"{event.request.AffectedSOPInstanceUID}.dcm")
        return 0x0000

    ae = AE(ae_title="BARESCP")
    ae.supported_contexts = scp_contexts()
    ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, store),
                                                      NODELAY_HANDLER])
    return 0


if __name__ == "__main__":
    sys.exit(main())
