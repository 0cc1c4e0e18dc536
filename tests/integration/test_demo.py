import pytest

pytestmark = pytest.mark.integration


def test_demo_prints_the_volume(make_node, sqlite_url):
    node = make_node(sqlite_url)
    node.start()
    out = node.cli("demo", "--timeout", "120")
    assert out.returncode == 0, out.stderr
    assert "graft:" in out.stdout and "ml by mri-watershed" in out.stdout
    assert ", QC pass" in out.stdout or ", QC review: " in out.stdout \
        or ", QC fail: " in out.stdout
    assert "round trip" in out.stdout
