"""An embedded daemon's socket and side files go when its Python process ends, by a signal
too: each test starts a child Python process with an embedded daemon and a port, ends it,
and looks for files named after the child's pid in the socket's directory."""

import glob
import os
import signal
import subprocess
import sys
import textwrap

import pytest

# The child starts an embedded daemon, opens a port (so the daemon is still running when the
# process ends), says where the socket is, then waits: in `time.sleep` in Python, or inside
# a blocking receive in the extension module. It sleeps long enough that only the signal ends
# it in time; if the signal did not, it exits 0 and the return code check fails.
CHILD = """
    import os, signal, sys, time
    import shmbus
    {setup}
    bus = shmbus.Bus.embedded()
    pub = bus.publisher("cleanup/x", slot_size=64, capacity=8)
    sub = bus.subscriber("cleanup/x")
    print(bus.socket_path, flush=True)
    {wait}
"""

SLEEP = "time.sleep(300)"
RECV = "sub.recv(timeout=300)"


def start(setup="", wait=SLEEP):
    code = textwrap.dedent(CHILD).format(setup=setup, wait=wait)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    socket = proc.stdout.readline().strip()
    assert socket, f"child did not start:\n{proc.communicate()[1]}"
    return proc, socket


def files_of(proc, socket):
    """The embedded daemons' files named after the child's pid, beside its socket."""
    pattern = os.path.join(os.path.dirname(socket), f"shmbus-embedded-{proc.pid}-*")
    return sorted(os.path.basename(f) for f in glob.glob(pattern))


def end(proc, signum):
    proc.send_signal(signum)
    _, err = proc.communicate()
    return err


def expect_files_while_running(proc, socket):
    name = os.path.basename(socket)
    found = files_of(proc, socket)
    assert name in found and f"{name}.lock" in found, found
    return found


@pytest.mark.parametrize("wait", [SLEEP, RECV], ids=["in-python", "in-recv"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_default_signal_still_kills_the_process_but_removes_the_files(signum, wait):
    proc, socket = start(wait=wait)
    expect_files_while_running(proc, socket)
    err = end(proc, signum)
    assert proc.returncode == -signum, err
    assert files_of(proc, socket) == []


@pytest.mark.parametrize("wait", [SLEEP, RECV], ids=["in-python", "in-recv"])
def test_ctrl_c_ends_through_keyboard_interrupt_and_removes_the_files(wait):
    proc, socket = start(wait=wait)
    expect_files_while_running(proc, socket)
    err = end(proc, signal.SIGINT)
    assert "KeyboardInterrupt" in err
    assert proc.returncode == -signal.SIGINT, err
    assert files_of(proc, socket) == []


def test_sigint_with_its_default_action_removes_the_files():
    proc, socket = start(setup="signal.signal(signal.SIGINT, signal.SIG_DFL)")
    expect_files_while_running(proc, socket)
    err = end(proc, signal.SIGINT)
    assert proc.returncode == -signal.SIGINT, err
    assert files_of(proc, socket) == []


def test_an_applications_own_handler_is_kept_and_sys_exit_removes_the_files():
    setup = """
def own(signum, frame):
    print("own handler", flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, own)
"""
    proc, socket = start(setup=setup)
    expect_files_while_running(proc, socket)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate()
    assert out == "own handler\n", err
    assert proc.returncode == 3, err
    assert files_of(proc, socket) == []


def test_an_ignored_signal_stays_ignored():
    # SIGUSR1, blocked in every thread, tells the child to go on once SIGHUP was sent.
    setup = """
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
signal.signal(signal.SIGHUP, signal.SIG_IGN)
"""
    wait = 'signal.sigwait([signal.SIGUSR1]); print("still running", flush=True)'
    proc, socket = start(setup=setup, wait=wait)
    expect_files_while_running(proc, socket)
    proc.send_signal(signal.SIGHUP)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate()
    assert out == "still running\n", err
    assert proc.returncode == 0, err
    assert files_of(proc, socket) == []  # gone at the normal exit
