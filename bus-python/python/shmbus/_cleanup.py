"""Removing an embedded daemon's files when the Python process ends.

``Bus.embedded()`` calls ``install()``. The files (``shmbus-embedded-<pid>-<n>.sock``,
``.lock``, ``.status``, ``.topics`` beside the default socket) are removed:

* at a normal exit, by an ``atexit`` callback (and by the Rust library's own exit hook);
* on SIGINT with Python's default handler: ``KeyboardInterrupt`` ends the program through
  the interpreter's shutdown, which runs the ``atexit`` callback;
* on SIGTERM and SIGHUP (and SIGINT when its disposition is the default action), by a handler
  installed here, which removes the files, restores the default action and sends the signal
  again: the process still ends killed by that signal, as it would have without shmbus (no
  ``finally`` blocks or ``atexit`` callbacks run, the exit status is the signal's).

A signal the application handles itself (its own handler, or ignored, when the first embedded
daemon starts) is left alone: a handler that ends the program with ``sys.exit()`` gets the
files removed by the ``atexit`` callback. Handlers can only be installed from the main thread;
an embedded daemon first started from another thread gets them when one is next started from
the main thread. SIGKILL leaves the files; the next embedded start removes them (their pid is
gone) and ``shmbus doctor`` reports them.
"""

import atexit
import os
import signal
import threading

from ._shmbus import _remove_embedded_files

_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")

_at_exit = False
_handlers = False


def install():
    """Remove this process's embedded daemons' files when it ends (idempotent)."""
    global _at_exit, _handlers
    if not _at_exit:
        atexit.register(_remove_embedded_files)
        _at_exit = True
    if _handlers or threading.current_thread() is not threading.main_thread():
        return
    for name in _SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _end_by_signal)
    _handlers = True


def _end_by_signal(signum, frame):
    _remove_embedded_files()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    # Not reached: the signal's default action ends the process (it is not blocked here, so
    # it is delivered before kill returns). Should it be blocked, end the way a shell reports
    # a death by signal.
    os._exit(128 + signum)
