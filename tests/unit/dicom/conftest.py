"""The SCP tests run an SCP of their own: the process-wide DICOM settings first, as the
node sets them at start-up."""

import pytest

from service.dicom.net import configure_reception


@pytest.fixture(autouse=True)
def _dicom_process_settings() -> None:
    configure_reception()
