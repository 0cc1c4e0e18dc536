"""What the node imports, `make install` installs: every third-party module imported
under service/ and models/ comes from a runtime dependency of pyproject.toml, not from
the test extra (a node installed without it once failed to start: httpx)."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWN = {"service", "models", "migrations", "benchmarks", "tests"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_modules() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in ("service", "models"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return {m: p for m, p in found.items()
            if m not in OWN and m not in sys.stdlib_module_names}


def test_every_imported_package_is_a_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in _imported_modules().items():
        owners = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        assert owners, f"{module} (imported in {where}) is not installed at all"
        # A module may come with a dependency's dependency (e.g. starlette with fastapi);
        # then one of its declared requirers must be a runtime dependency.
        if not owners & runtime and not any(
                _required_by(owner) & runtime for owner in owners):
            missing[module] = where
    assert not missing, f"imported but not in [project].dependencies: {missing}"


def _required_by(distribution: str) -> set[str]:
    """Distributions whose requirements name ``distribution``."""
    out = set()
    for dist in importlib.metadata.distributions():
        for requirement in dist.requires or []:
            if "extra ==" not in requirement and _name(requirement) == distribution:
                out.add(dist.metadata["Name"].lower().replace("_", "-"))
    return out
