import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    return str(found) if found.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    out = subprocess.run([_hadolint(), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_installs_and_runs_like_the_makefile():
    text = (ROOT / "Dockerfile").read_text()
    assert "make install" in text
    assert re.search(r'ENTRYPOINT \[".*kidney-node", "--config", "config/kidney-node.yaml"\]',
                     text)
    assert "EXPOSE 11112 8080" in text
