"""Configuration: one YAML file, overridden by ``KIDNEY_NODE_`` environment variables."""

from service.config.loading import ENV_PREFIX, load_settings
from service.config.settings import (
    ClassificationRules,
    CtSettings,
    DatabaseSettings,
    Destination,
    DestinationTls,
    DicomSettings,
    DicomWebTarget,
    GraftSettings,
    HttpSettings,
    ProcessingSettings,
    QcSettings,
    SchedulerSettings,
    SenderSettings,
    Settings,
    StorageSettings,
    TlsSettings,
    TrendSettings,
)

__all__ = [
    "ENV_PREFIX",
    "ClassificationRules",
    "CtSettings",
    "DatabaseSettings",
    "Destination",
    "DestinationTls",
    "DicomSettings",
    "DicomWebTarget",
    "GraftSettings",
    "HttpSettings",
    "ProcessingSettings",
    "SchedulerSettings",
    "SenderSettings",
    "Settings",
    "StorageSettings",
    "TlsSettings",
    "QcSettings",
    "TrendSettings",
    "load_settings",
]
