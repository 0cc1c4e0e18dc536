"""The pipelines and the image maths do not import the database layer (issue 19): they
take the domain's enums from service.domain."""

import subprocess
import sys


def test_pipelines_load_without_the_database_layer():
    script = ("import sys\n"
              "import models.graft, models.ct_kidneys\n"
              "import service.pipeline.registry, service.pipeline.ct_kidneys\n"
              "import service.pipeline.mri_graft, service.pipeline.mri_graft_nc\n"
              "print(sorted(m for m in sys.modules if m.startswith(('service.db', 'sqlalchemy'))))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
