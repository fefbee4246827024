"""Fixtures: an embedded daemon per test (a real shmbusd, in this process), unique topic
names, and child Python processes that reach the daemon through SHMBUS_SOCKET."""

import itertools
import os
import subprocess
import sys
import textwrap

import pytest

import shmbus

_names = itertools.count()


@pytest.fixture
def bus():
    b = shmbus.Bus.embedded()
    yield b


@pytest.fixture
def topic(request):
    return f"py/{request.node.name}/{os.getpid()}/{next(_names)}"


class Child:
    """A child Python process running `code` against the daemon of `bus`."""

    def __init__(self, bus, code):
        env = dict(os.environ, SHMBUS_SOCKET=bus.socket_path)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def readline(self):
        return self.proc.stdout.readline().rstrip("\n")

    def finish(self, timeout=30):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.returncode == 0, f"child failed ({self.proc.returncode}):\n{err}"
        return out.splitlines()


@pytest.fixture
def child(bus):
    children = []

    def spawn(code):
        c = Child(bus, code)
        children.append(c)
        return c

    yield spawn
    for c in children:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()
