from pathlib import Path

import pytest

from service.config import load_settings
from service.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_are_the_embedded_ones():
    s = load_settings(environ={})
    assert s.dicom.ae_title == "KIDNEYNODE"
    assert s.dicom.port == 11112
    assert s.database.url.startswith("sqlite:///var/")
    assert s.storage.root == Path("var/storage")
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)
    assert s.destinations == ()


def test_shipped_config_file_matches_defaults():
    assert load_settings(ROOT / "config" / "kidney-node.yaml", environ={}) == load_settings(
        environ={})


def test_env_overrides_nested_keys_and_json_lists(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dicom:\n  port: 104\n  ae_title: FROMFILE\n")
    env = {
        "KIDNEY_NODE_DICOM__PORT": "11113",
        "KIDNEY_NODE_DICOM__ALLOWED_CALLING_AETS": '["PACS", "MODALITY1"]',
        "KIDNEY_NODE_DESTINATIONS":
            '[{"name":"pacs","ae_title":"PACS","host":"10.0.0.5","port":104}]',
        "KIDNEY_NODE_SCHEDULER__STABLE_AGE_SECONDS": "30",
        "OTHER": "ignored",
    }
    s = load_settings(cfg, environ=env)
    assert s.dicom.port == 11113  # env wins over the file
    assert s.dicom.ae_title == "FROMFILE"  # file wins over defaults
    assert s.dicom.allowed_calling_aets == ("PACS", "MODALITY1")
    assert [(d.name, d.ae_title, d.host, d.port) for d in s.destinations] == [
        ("pacs", "PACS", "10.0.0.5", 104)]
    assert s.scheduler.stable_age_seconds == 30


def test_config_file_named_by_environment(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("http:\n  port: 9999\n")
    assert load_settings(environ={"KIDNEY_NODE_CONFIG": str(cfg)}).http.port == 9999


def test_numeric_looking_ae_title_stays_a_string():
    s = load_settings(environ={"KIDNEY_NODE_DICOM__AE_TITLE": "104"})
    assert s.dicom.ae_title == "104"


@pytest.mark.parametrize("env, key", [
    ({"KIDNEY_NODE_DICOM__PORT": "70000"}, "dicom.port"),
    ({"KIDNEY_NODE_DICOM__AE_TITLE": "A" * 17}, "dicom.ae_title"),
    ({"KIDNEY_NODE_DICOM__PORTT": "1"}, "dicom.portt"),
    ({"KIDNEY_NODE_DESTINATIONS": '[{"name":"x","ae_title":"X","host":"h"}]'},
     "destinations.0: .*port missing"),
])
def test_invalid_values_name_the_key(env, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace(r"\.*", ".*")):
        load_settings(environ=env)


def test_unreadable_file_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_settings(bad, environ={})
