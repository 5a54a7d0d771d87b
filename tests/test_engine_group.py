"""`make test` runs the engine tests on one pytest-xdist worker, as one group, while the other
worker takes the unit tests (tests/conftest.py). If the group were silently dropped (pytest 9
with pytest-xdist 3.8 did that), engine tests would run on both workers at once, each starting
its own engine, and the suite would slow down without failing; this test makes that loud."""
import pytest

pytestmark = pytest.mark.integration


def test_engine_tests_run_as_one_group_under_loadgroup(request):
    if request.config.getoption("dist", "no") != "loadgroup":
        pytest.skip("only meaningful under `-n 2 --dist loadgroup` (make test)")
    assert request.node.nodeid.endswith("@engine"), request.node.nodeid
