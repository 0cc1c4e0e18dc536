"""Load settings once: defaults < YAML file < ``KIDNEY_NODE_*`` environment variables."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from service.config.settings import Settings
from service.errors import ConfigError

__all__ = ["ENV_PREFIX", "load_settings"]

ENV_PREFIX = "KIDNEY_NODE_"
_NOT_SETTINGS = {"CONFIG", "REQUIRE_POSTGRES", "REQUIRE_TMPFS", "REQUIRE_RABBITMQ",
                 "TEST_PG_ADMIN", "TEST_AMQP"}  # CONFIG names the file itself;
# the REQUIRE_* switches are the test suite's (.ci/run)


def _parse_env_value(raw: str) -> Any:
    """JSON when it parses (lists, objects, numbers, booleans), the plain string otherwise."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX):]
        if rest in _NOT_SETTINGS or not rest:
            continue
        parts = [p.lower() for p in rest.split("__")]
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {key} conflicts with another override")
        value = _parse_env_value(raw)
        # A value meant as a string that happens to parse as a number (an AE title "104")
        # is coerced back by pydantic where the field is a string.
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


#: Keys whose values an error message never repeats (a token, a URL with a password).
_SECRET_KEYS = frozenset({"token", "password", "url"})


def _holds_secret(value: object) -> bool:
    """Whether ``value`` (a section that failed as a whole) holds a secret key."""
    if isinstance(value, dict):
        return any(str(k) in _SECRET_KEYS or _holds_secret(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_secret(v) for v in value)
    return False


def load_settings(
    config_file: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the node's settings.

    Parameters
    ----------
    config_file
        A YAML file; when None, ``KIDNEY_NODE_CONFIG`` names one, else defaults only.
    environ
        The environment to read overrides from (``os.environ`` when None).

    Raises
    ------
    ConfigError
        When the file cannot be read or a value is invalid; the message names the key.
    """
    env = os.environ if environ is None else environ
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file}: top level must be a mapping")
        data = loaded or {}
    data = _merge(data, _env_overrides(env))
    try:
        return Settings.model_validate(_stringify_ae_titles(data))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            secret = any(str(p) in _SECRET_KEYS for p in err["loc"]) \
                or _holds_secret(err.get("input"))
            got = "(value not shown)" if secret else f"(got {err.get('input')!r})"
            lines.append(f"{loc}: {err['msg']} {got}")
        source = f" in {config_file}" if config_file else ""
        raise ConfigError("invalid configuration" + source + ": " + "; ".join(lines)) from exc


def _stringify_ae_titles(data: dict[str, Any]) -> dict[str, Any]:
    """AE titles and names are strings even when an env value looked like a number."""
    dicom = data.get("dicom")
    if isinstance(dicom, dict) and isinstance(dicom.get("ae_title"), int | float):
        dicom["ae_title"] = str(dicom["ae_title"])
    for dest in data.get("destinations") or []:
        if isinstance(dest, dict):
            for key in ("ae_title", "name"):
                if isinstance(dest.get(key), int | float):
                    dest[key] = str(dest[key])
    return data
