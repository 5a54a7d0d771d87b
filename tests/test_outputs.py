import os

import pytest

from generator.errors import UserError
from generator.outputs import check_out_dir, check_out_file


def test_a_new_or_existing_folder_passes_and_nothing_is_created(tmp_path):
    check_out_dir(tmp_path, "--out")
    check_out_dir(tmp_path / "new" / "deeper", "--out")
    assert list(tmp_path.iterdir()) == []


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"--out .*f: is a file, not a folder"):
        check_out_dir(tmp_path / "f", "--out")


def test_nothing_can_be_created_under_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"f is a file, so nothing can be created under it"):
        check_out_dir(tmp_path / "f" / "a" / "b", "--out")
    with pytest.raises(UserError, match=r"f is a file, so nothing can be created under it"):
        check_out_file(tmp_path / "f" / "r.json", "--json")


def test_a_link_to_nothing_is_refused(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(UserError, match="a link to nothing"):
        check_out_dir(tmp_path / "link", "--out")


def test_unwritable_places_are_refused(tmp_path, monkeypatch):
    """os.access decides (the tests run as root, for whom chmod does not bite)."""
    (tmp_path / "ro").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("ro") else real(p, mode))
    with pytest.raises(UserError, match=r"ro: folder is not writable"):
        check_out_dir(tmp_path / "ro", "--out")
    with pytest.raises(UserError, match=r"cannot be created, .*ro is not writable"):
        check_out_dir(tmp_path / "ro" / "run", "--out")
    with pytest.raises(UserError, match=r"cannot be created, .*ro is not writable"):
        check_out_file(tmp_path / "ro" / "r.json", "--json")


def test_a_place_where_nothing_can_be_made_is_refused_though_permissions_allow_it(tmp_path):
    """RC3: `run --out /proc/fuzz` passed the checks (root may write anywhere by its permissions)
    and the engine started before mkdir failed; the probe entry leaves nothing behind."""
    with pytest.raises(UserError, match=r"--out /proc/fuzz: cannot be created, /proc is not writable"):
        check_out_dir("/proc/fuzz", "--out")
    with pytest.raises(UserError, match=r"--json /proc/fuzz/r.json: cannot be created, /proc is not"):
        check_out_file("/proc/fuzz/r.json", "--json")
    check_out_dir(tmp_path / "run", "--out")
    assert list(tmp_path.iterdir()) == []


def test_an_output_inside_or_onto_an_input_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("{}\n")
    with pytest.raises(UserError, match=r"lies inside the input .*run"):
        check_out_dir(run / "export", "--out", inputs=[run])
    with pytest.raises(UserError, match=r"is the input .*run itself"):
        check_out_dir(run, "--out", inputs=[run])
    with pytest.raises(UserError, match=r"is the input .*c.jsonl itself"):
        check_out_file(corpus, "--json", inputs=[corpus])
    check_out_dir(tmp_path / "export", "--out", inputs=[run, corpus])  # beside the inputs is fine


def test_an_output_file_may_not_be_a_folder(tmp_path):
    with pytest.raises(UserError, match=r"--plot .*: is a folder, not a file"):
        check_out_file(tmp_path, "--plot")
    check_out_file(tmp_path / "new" / "plot.png", "--plot")
