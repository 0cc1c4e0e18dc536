"""kidney-node: the DICOM node (SCP, storage, trigger, jobs, SEG writer, sender, API, CLI)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
