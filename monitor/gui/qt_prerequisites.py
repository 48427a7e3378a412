"""Can a Qt window open here? Checked before PySide6 is imported, so that the answer is one line.

Without these checks a missing system library or a missing display does not raise:
Qt prints a paragraph about its xcb plugin and aborts the process (SIGABRT, exit 134),
and a missing library of QtGui itself is an ImportError traceback. Both are facts of
the machine, not of nanomaps, so the line says which Debian/Ubuntu packages fix them.

Nothing here imports Qt; the checks load shared libraries with ``ctypes`` (as Qt's
loader would, honouring ``LD_LIBRARY_PATH`` and the ld cache) and, for X11, open and
close one connection to the display with libxcb.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Iterable, Mapping

from monitor.exit_codes import EXIT_USAGE

#: Libraries QtGui links on every platform (offscreen too): soname → Debian/Ubuntu package.
#: Read from ``readelf -d`` of PySide6's libQt6Gui.so.6.
GUI_LIBRARIES: dict[str, str] = {
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libX11.so.6": "libx11-6",
}

#: Libraries the xcb platform plugin (libqxcb.so and libQt6XcbQpa.so.6) links, beyond
#: :data:`GUI_LIBRARIES`: soname → Debian/Ubuntu package. Qt ≥ 6.5 added xcb-cursor, the
#: one most often missing; a minimal system also lacks icccm and keysyms.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libX11-xcb.so.1": "libx11-xcb1",
}

#: Every package the window may need on Debian/Ubuntu, for an install line that fixes all at once.
ALL_PACKAGES: tuple[str, ...] = tuple(dict.fromkeys([*GUI_LIBRARIES.values(), *XCB_LIBRARIES.values()]))

#: Platforms that draw into memory or a framebuffer: no display, no X libraries.
_NO_DISPLAY_PLATFORMS = ("offscreen", "minimal", "minimalegl", "vnc", "linuxfb", "eglfs", "vkkhrdisplay")


def qt_platform(environ: Mapping[str, str] | None = None) -> str:
    """The Qt platform plugin a window will use here: ``xcb``, ``wayland``, ``offscreen``, ..., or ``""``.

    ``""`` means none can work: no ``QT_QPA_PLATFORM`` and no display. A list such as
    ``"wayland;xcb"`` counts by its first entry (Qt's own order). Without
    ``QT_QPA_PLATFORM`` Qt takes Wayland in a Wayland session and X11 otherwise.
    """
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return sys.platform      # Windows/macOS plugins need no extra system libraries
    chosen = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip().lower()
    if chosen:
        return chosen
    if env.get("WAYLAND_DISPLAY") and (env.get("XDG_SESSION_TYPE") == "wayland" or not env.get("DISPLAY")):
        return "wayland"
    if env.get("DISPLAY"):
        return "xcb"
    return ""


def missing_libraries(sonames: Iterable[str]) -> list[str]:
    """Those of ``sonames`` (e.g. ``"libxcb-cursor.so.0"``) the dynamic loader cannot load, in order."""
    missing = []
    for soname in sonames:
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(soname)
    return missing


def missing_qt_libraries(environ: Mapping[str, str] | None = None, *,
                         gui_libraries: Mapping[str, str] = GUI_LIBRARIES,
                         xcb_libraries: Mapping[str, str] = XCB_LIBRARIES) -> list[str]:
    """Sonames a Qt window needs here but the loader cannot find ([] when nothing is missing).

    QtGui's own libraries (``gui_libraries``, soname → package) are needed on every
    platform; the xcb plugin's (``xcb_libraries``) only when the platform will be
    ``xcb`` (see :func:`qt_platform`): offscreen, minimal or Wayland need none of them.
    """
    if not sys.platform.startswith("linux"):
        return []
    needed = list(gui_libraries)
    if qt_platform(environ) == "xcb":
        needed += list(xcb_libraries)
    return missing_libraries(needed)


def packages_for(sonames: Iterable[str], table: Mapping[str, str] | None = None) -> list[str]:
    """Debian/Ubuntu packages providing ``sonames`` per ``table`` (soname → package; default: all
    known), without repeats; a soname not in the table is named as it is."""
    table = {**GUI_LIBRARIES, **XCB_LIBRARIES} if table is None else table
    return list(dict.fromkeys(table.get(s, s) for s in sonames))


def x_display_problem(display: str) -> str | None:
    """Why X display ``display`` (e.g. ``":0"``) cannot be opened, or None when it can.

    Opens and closes one connection with libxcb, exactly as Qt's xcb plugin will, so
    a dead display, a stale ``DISPLAY`` after logout or a refused authorisation shows
    here instead of as Qt's abort. None too when libxcb itself is missing (reported
    by :func:`missing_qt_libraries`).
    """
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return None
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = (ctypes.c_char_p, ctypes.c_void_p)
    xcb.xcb_connection_has_error.restype = ctypes.c_int
    xcb.xcb_connection_has_error.argtypes = (ctypes.c_void_p,)
    xcb.xcb_disconnect.restype = None
    xcb.xcb_disconnect.argtypes = (ctypes.c_void_p,)
    connection = xcb.xcb_connect(display.encode(), None)
    try:
        error = xcb.xcb_connection_has_error(connection) if connection else 1
    finally:
        if connection:
            xcb.xcb_disconnect(connection)  # also frees the error object xcb returns on failure
    if error == 0:
        return None
    return (f"the X display {display!r} (DISPLAY) does not answer or refuses this user. Fix: run in the desktop "
            "session that owns it (or ssh -X), or unset DISPLAY and render offscreen")


def qt_problem(environ: Mapping[str, str] | None = None, *, headless_hint: str = "",
               gui_libraries: Mapping[str, str] = GUI_LIBRARIES,
               xcb_libraries: Mapping[str, str] = XCB_LIBRARIES) -> str | None:
    """One line saying why a Qt window cannot open here and how to fix it, or None when it can.

    ``headless_hint`` names the command's own way to run without a window (e.g.
    ``"--screenshot PNG"``); it is offered in the fix when there is no display.
    ``environ`` (default ``os.environ``) and the library tables are parameters for tests.
    """
    env = os.environ if environ is None else environ
    platform = qt_platform(env)
    if not platform:
        instead = f"use {headless_hint}, or " if headless_hint else ""
        return ("no display: DISPLAY and WAYLAND_DISPLAY are not set, so no window can open. Fix: run it in a "
                f"desktop session (or ssh -X), or {instead}set QT_QPA_PLATFORM=offscreen to render without a screen")
    missing = missing_qt_libraries(env, gui_libraries=gui_libraries, xcb_libraries=xcb_libraries)
    if missing:
        packages = packages_for(missing, {**gui_libraries, **xcb_libraries})
        where = "the Qt window (xcb platform)" if platform == "xcb" else "Qt"
        return (f"{where} needs system libraries that are not installed: {', '.join(missing)}. "
                f"Fix: sudo apt-get install {' '.join(packages)} (Debian/Ubuntu names)")
    if platform == "xcb":
        return x_display_problem(env.get("DISPLAY", ""))
    return None


def require_qt(command: str, *, headless_hint: str = "", environ: Mapping[str, str] | None = None) -> int | None:
    """For ``nanomaps COMMAND`` before it imports PySide6: None when a window can open, else 2.

    On a problem prints ``nanomaps COMMAND: <one line>`` (see :func:`qt_problem`) to
    stderr and returns the usage/environment exit code 2 for the caller to return.
    """
    problem = qt_problem(environ, headless_hint=headless_hint)
    if problem is None:
        return None
    print(f"nanomaps {command}: {problem}", file=sys.stderr)
    return EXIT_USAGE
