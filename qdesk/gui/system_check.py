"""Before Qt starts: are the system libraries and a display there?

Qt aborts the whole process ("could not load the Qt platform plugin xcb") when
one library of its X11 plugin is missing, and names none of them. This check
runs first (no Qt import) and returns one line naming what is missing, with the
package to install, or None when the window can open.

The list is what the PySide6 wheel's ``libqxcb.so``, ``libQt6XcbQpa``,
``libQt6Gui`` and ``libQt6DBus`` link against outside the wheel (``readelf -d``,
PySide6 6.12); the README lists the same with Debian/Ubuntu and Fedora names.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class SystemLibrary:
    soname: str
    debian: str
    fedora: str


# Every Qt platform needs these (QtGui itself).
GUI_LIBRARIES = (
    SystemLibrary("libGL.so.1", "libgl1", "libglvnd-glx"),
    SystemLibrary("libEGL.so.1", "libegl1", "libglvnd-egl"),
    SystemLibrary("libfontconfig.so.1", "libfontconfig1", "fontconfig"),
    SystemLibrary("libfreetype.so.6", "libfreetype6", "freetype"),
    SystemLibrary("libglib-2.0.so.0", "libglib2.0-0", "glib2"),
    SystemLibrary("libgthread-2.0.so.0", "libglib2.0-0", "glib2"),
    SystemLibrary("libxkbcommon.so.0", "libxkbcommon0", "libxkbcommon"),
    SystemLibrary("libdbus-1.so.3", "libdbus-1-3", "dbus-libs"),
    SystemLibrary("libz.so.1", "zlib1g", "zlib"),
    SystemLibrary("libzstd.so.1", "libzstd1", "libzstd"),
)

# The X11 (xcb) platform plugin adds these.
XCB_LIBRARIES = (
    SystemLibrary("libX11.so.6", "libx11-6", "libX11"),
    SystemLibrary("libX11-xcb.so.1", "libx11-xcb1", "libX11-xcb"),
    SystemLibrary("libxcb.so.1", "libxcb1", "libxcb"),
    SystemLibrary("libxcb-cursor.so.0", "libxcb-cursor0", "xcb-util-cursor"),
    SystemLibrary("libxcb-icccm.so.4", "libxcb-icccm4", "xcb-util-wm"),
    SystemLibrary("libxcb-image.so.0", "libxcb-image0", "xcb-util-image"),
    SystemLibrary("libxcb-keysyms.so.1", "libxcb-keysyms1", "xcb-util-keysyms"),
    SystemLibrary("libxcb-randr.so.0", "libxcb-randr0", "libxcb"),
    SystemLibrary("libxcb-render.so.0", "libxcb-render0", "libxcb"),
    SystemLibrary("libxcb-render-util.so.0", "libxcb-render-util0", "xcb-util-renderutil"),
    SystemLibrary("libxcb-shape.so.0", "libxcb-shape0", "libxcb"),
    SystemLibrary("libxcb-shm.so.0", "libxcb-shm0", "libxcb"),
    SystemLibrary("libxcb-sync.so.1", "libxcb-sync1", "libxcb"),
    SystemLibrary("libxcb-util.so.1", "libxcb-util1", "xcb-util"),
    SystemLibrary("libxcb-xfixes.so.0", "libxcb-xfixes0", "libxcb"),
    SystemLibrary("libxcb-xkb.so.1", "libxcb-xkb1", "libxcb"),
    SystemLibrary("libxkbcommon-x11.so.0", "libxkbcommon-x11-0", "libxkbcommon-x11"),
)

# Platforms that draw without a display server.
_HEADLESS = ("offscreen", "minimal", "vnc", "linuxfb", "eglfs", "vkkhrdisplay")


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_libraries(libraries, loads=_loads) -> list[SystemLibrary]:
    return [lib for lib in libraries if not loads(lib.soname)]


def qt_platform(env) -> str:
    """The Qt platform plugin that will be used (QT_QPA_PLATFORM, else Qt's
    default: wayland in a Wayland session with a compositor, else xcb)."""
    asked = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if asked:
        return asked
    if env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland":
        return "wayland"
    return "xcb"


def x_display_reachable(display: str) -> bool:
    """Whether an X server answers on ``display`` (libxcb's own connect)."""
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return False
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)
    try:
        return bool(conn) and xcb.xcb_connection_has_error(conn) == 0
    finally:
        if conn:
            xcb.xcb_disconnect(conn)


def check_system(env=None, loads=_loads, reachable=x_display_reachable) -> str | None:
    """One line saying what keeps the window from opening, or None."""
    if not sys.platform.startswith("linux"):
        return None  # the wheels carry what they need on macOS and Windows
    env = os.environ if env is None else env
    platform = qt_platform(env)
    libraries = list(GUI_LIBRARIES)
    if platform == "xcb":
        libraries += XCB_LIBRARIES
    missing = missing_libraries(libraries, loads)
    if missing:
        debian = " ".join(dict.fromkeys(lib.debian for lib in missing))
        fedora = " ".join(dict.fromkeys(lib.fedora for lib in missing))
        names = ", ".join(lib.soname for lib in missing)
        return (f"the window needs system libraries that are missing: {names} "
                f"(Debian/Ubuntu: sudo apt install {debian}; Fedora: sudo dnf install {fedora})")
    if platform == "xcb":
        display = env.get("DISPLAY", "")
        if not display:
            return ("no display: DISPLAY is not set (run it in a desktop session or under "
                    "xvfb-run; screenshots also work with QT_QPA_PLATFORM=offscreen)")
        if not reachable(display):
            return f"no display: the X server at DISPLAY={display} does not answer"
    if platform == "wayland" and not env.get("WAYLAND_DISPLAY"):
        return "no display: WAYLAND_DISPLAY is not set"
    return None
