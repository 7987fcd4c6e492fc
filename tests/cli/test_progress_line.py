"""An error after a half-drawn progress line starts a line of its own on stderr."""

from qdesk.cli import main
from qdesk.cli.common import progress_to_stderr


def test_error_after_progress_starts_its_own_line(capsys, tmp_path):
    progress_to_stderr("loading", 1, 3)  # an unfinished "\r" line, as when a load fails midway
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    lines = err.split("\n")
    assert lines[0] == "\rloading 1/3"
    assert lines[1].startswith("qdesk: error:")
    assert err.count("\n") == 2  # the progress line's end, then the one error line


def test_finished_progress_needs_no_extra_newline(capsys, tmp_path):
    progress_to_stderr("loading", 3, 3)
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("\rloading 3/3\nqdesk: error:")
