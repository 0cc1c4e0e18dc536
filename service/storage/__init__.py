"""Archive on disk plus its index."""

from service.storage.layout import instance_relpath, safe_component
from service.storage.store import InstanceStore, StoredInstance, read_header

__all__ = ["InstanceStore", "StoredInstance", "instance_relpath", "read_header", "safe_component"]
