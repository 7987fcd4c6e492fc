"""Before Qt starts, ``qdesk gui`` says in one line which system library is
missing or that there is no display, instead of Qt's abort."""

from __future__ import annotations

import os
import subprocess
import sys

from qdesk.gui.system_check import XCB_LIBRARIES, check_system, missing_libraries


def test_a_missing_xcb_library_is_named_with_its_packages():
    absent = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
    line = check_system({"DISPLAY": ":0"}, loads=lambda so: so not in absent,
                        reachable=lambda d: True)
    assert line.startswith("the window needs system libraries that are missing: ")
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in line
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in line
    assert "sudo dnf install xcb-util-wm xcb-util-keysyms" in line
    assert "\n" not in line


def test_no_display_and_an_unreachable_display():
    ok = lambda so: True  # noqa: E731
    assert "DISPLAY is not set" in check_system({}, loads=ok, reachable=lambda d: True)
    line = check_system({"DISPLAY": ":77"}, loads=ok, reachable=lambda d: False)
    assert line == "no display: the X server at DISPLAY=:77 does not answer"
    assert check_system({"DISPLAY": ":0"}, loads=ok, reachable=lambda d: True) is None


def test_offscreen_needs_no_display_nor_xcb_libraries():
    loads = lambda so: so not in {lib.soname for lib in XCB_LIBRARIES}  # noqa: E731
    assert check_system({"QT_QPA_PLATFORM": "offscreen"}, loads=loads) is None


def test_every_library_of_the_real_plugin_is_known():
    """The list matches what the installed xcb plugin links against outside the wheel."""
    import PySide6

    from qdesk.gui.system_check import GUI_LIBRARIES

    plugin = os.path.join(os.path.dirname(PySide6.__file__), "Qt", "plugins", "platforms",
                          "libqxcb.so")
    out = subprocess.run(["readelf", "-d", plugin], capture_output=True, text=True)
    if out.returncode != 0:
        return  # no binutils here: nothing to compare against
    needed = {line.split("[")[1].rstrip("]") for line in out.stdout.splitlines() if "NEEDED" in line}
    system = {n for n in needed if not n.startswith("libQt6")} - {
        "libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1"}
    known = {lib.soname for lib in GUI_LIBRARIES + XCB_LIBRARIES}
    assert system <= known, system - known
    assert missing_libraries(GUI_LIBRARIES, lambda so: True) == []


def test_qdesk_gui_without_a_display_exits_2_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY",
                                                            "QT_QPA_PLATFORM")}
    p = subprocess.run([sys.executable, "-m", "qdesk.cli", "gui"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdesk: error: ")
    assert "missing" in lines[0] or "no display" in lines[0]
