"""`make test` runs the engine tests as one group on one pytest-xdist worker while the other
takes unit tests (tests/conftest.py). If the group were silently dropped (pytest 9
with pytest-xdist 3.8 did that), engine tests would run on both workers at once, each starting
its own engine, and the suite would slow down without failing; this test makes that loud."""
import pytest

pytestmark = pytest.mark.integration


def test_engine_tests_run_in_their_groups_under_loadgroup(request):
    if not getattr(request.config.option, "loadgroup", False):  # set on the workers of --dist loadgroup
        pytest.skip("only meaningful under `-n 2 --dist loadgroup` (make test)")
    assert request.node.nodeid.endswith("@engine"), request.node.nodeid
