"""The sandbox's hostile battery: programs that must fail, and harm that must not happen.

Each program would, if it passed or did what it tries, show a hole: a fake pass, a file
written or deleted outside its directory, a process or socket reaching the host. The
battery runs them all against a canary directory and two listeners (TCP and a unix socket)
it sets up, then checks that every program failed and that the canary and the listeners
were left alone. ``python -m boe_bench.selfcheck`` and tests/test_sandbox.py both run it.

A few programs are stopped by the kernel wall only (the in-process guard cannot see SQL
``ATTACH``, ``_posixsubprocess`` or reads of the host's ``/proc``, and RLIMIT_NPROC does not
bind root): they are marked ``kernel`` and run only where namespaces work.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from boe_bench.scoring import sandbox


@dataclass(frozen=True)
class Hostile:
    name: str
    source: str
    tests: str | None = None  # run after ``source`` as the code tasks run their tests
    kernel: bool = False  # only the namespaces stop it


def programs(canary: Path, port: int, unix_path: str) -> list[Hostile]:
    keep, new = str(canary / "keep.txt"), str(canary / "new.txt")
    harness = os.getpid()
    walk_frames = ("import sys, os\nf = sys._getframe(0)\nwhile f is not None:\n"
                   "    for v in list(f.f_locals.values()):\n"
                   "        cells = getattr(v, '__closure__', None) or ()\n"
                   "        for c in [v, *(x.cell_contents for x in cells)]:\n"
                   "            if isinstance(c, str) and len(c) == 32:\n                print(c)\n"
                   "    f = f.f_back\nsys.stdout.flush()\nos._exit(0)\nassert False")
    rebuilt_posix = ("import importlib.machinery as m, importlib.util as u\n"
                     "p = u.module_from_spec(m.ModuleSpec('posix', m.BuiltinImporter))\n"
                     f"m.BuiltinImporter.exec_module(p)\np.unlink({keep!r})")
    # multiprocessing's spawn starts its child through _posixsubprocess, which raises no event.
    spawn = ("import multiprocessing, os\n"
             f"p = multiprocessing.get_context('spawn').Process(target=os.remove, args=({keep!r},))\n"
             f"p.start()\np.join()\nassert p.exitcode == 0 and not os.path.exists({keep!r})")
    return [
        Hostile("infinite loop", "while True:\n    pass"),
        Hostile("sleep forever", "import time\ntime.sleep(10**6)"),
        Hostile("fork bomb", "import os\nwhile True:\n    os.fork()"),
        Hostile("fork bomb via posix", "import posix\nwhile True:\n    posix.fork()"),
        Hostile("fork bomb via multiprocessing", "import multiprocessing as m\nwhile True:\n    m.Process(target=print).start()"),
        Hostile("subprocess", "import subprocess\nsubprocess.run(['sleep', '100'])"),
        Hostile("os.system", "import os\nos.system('sleep 100')"),
        Hostile("memory bomb", "x = bytearray(8 * 1024**3)\nassert x"),
        Hostile("growing memory", "a = []\nwhile True:\n    a.append(' ' * 10**7)"),
        Hostile("rmtree outside", f"import shutil\nshutil.rmtree({str(canary)!r})"),
        Hostile("remove outside", f"import os\nos.remove({keep!r})"),
        Hostile("unlink via posix", f"import posix\nposix.unlink({keep!r})"),
        Hostile("unlink via dir_fd", f"import os\nos.unlink('keep.txt', dir_fd=os.open({str(canary)!r}, os.O_RDONLY))"),
        Hostile("rename outside", f"import os\nos.rename({keep!r}, 'stolen.txt')"),
        Hostile("move outside", f"import shutil\nshutil.move({keep!r}, 'stolen.txt')"),
        Hostile("write outside", f"open({keep!r}, 'w').write('pwned')"),
        Hostile("write outside via ..", f"import os\nopen(os.getcwd() + '/../..' + {keep!r}, 'w').write('pwned')"),
        Hostile("pathlib write outside", f"import pathlib\npathlib.Path({new!r}).write_text('x')"),
        Hostile("FileIO write outside", f"import io\nio.FileIO({new!r}, 'w').write(b'x')"),
        Hostile("os.open write outside", f"import os\nos.write(os.open({new!r}, os.O_CREAT | os.O_WRONLY), b'x')"),
        Hostile("mkdir outside", f"import os\nos.makedirs({str(canary / 'made' / 'deep')!r})"),
        Hostile("chmod outside", f"import os\nos.chmod({keep!r}, 0)"),
        Hostile("socket to a local server", f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"),
        Hostile("kill parent", "import os\nos.kill(os.getppid(), 9)"),
        Hostile("kill the harness by pid", f"import posix\nposix.kill({harness}, 9)"),
        Hostile("kill own process group", "import os\nos.killpg(0, 9)"),
        Hostile("ctypes", f"import ctypes\nctypes.CDLL(None).kill({harness}, 9)"),
        Hostile("sys.exit(0) before the asserts", "import sys\nsys.exit(0)\nassert False"),
        Hostile("exit() before the asserts", "exit()\nassert False"),
        Hostile("raise SystemExit(0)", "raise SystemExit(0)\nassert False"),
        Hostile("os._exit(0) before the asserts", "import os\nos._exit(0)\nassert False"),
        Hostile("reads stdin", "assert input()"),
        Hostile("output flood", "while True:\n    print('x' * 10000)"),
        Hostile("stderr flood", "import sys\nwhile True:\n    sys.stderr.write('x' * 10000)"),
        Hostile("recursion bomb", "def f(n):\n    return f(n + 1)\nf(0)"),
        Hostile("deep recursion bomb", "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)"),
        Hostile("failing assert", "assert 1 + 1 == 3"),
        Hostile("syntax error", "def broken(:\n    pass"),
        # issue 17, item 7
        Hostile("deletes its own working directory", "import os, shutil\nshutil.rmtree(os.getcwd())"),
        # issue 17, item 8: fake passes
        Hostile("prints every 32-char string in reach of its frames", walk_frames),
        Hostile("gc walk for the nonce", "import gc\nfor o in gc.get_objects():\n    print(o)\nimport os\nos._exit(0)"),
        Hostile("reads its own memory", "open('/proc/self/mem', 'rb')\nimport os\nos._exit(0)"),
        Hostile("raises the end-of-program marker", "import sys\nsys.audit('boe.sandbox.done')\nassert False"),
        Hostile("patches builtins the tests use", "import builtins\nbuiltins.abs = lambda x: 0\ndef f():\n    return 5",
                tests="assert abs(f() - 1) < 1e-9"),
        Hostile("installs its own audit hook", "import sys\ncalls = []\nsys.addaudithook(lambda e, a: calls.append(e))\n"
                "open('x', 'w')\nassert calls"),
        # issue 17, item 9: escapes of the in-process guard
        Hostile("original FileIO class", f"import sys\ntype(sys.stdout.buffer.raw)({keep!r}, 'w').write(b'pwned')"),
        Hostile("rebuilt posix module", rebuilt_posix),
        Hostile("sqlite3 file outside", f"import sqlite3\nsqlite3.connect({new!r}).execute('create table t(x)')"),
        Hostile("unix socket to a host server", f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({unix_path!r})"),
        Hostile("sqlite3 ATTACH outside", "import sqlite3\nc = sqlite3.connect(':memory:')\n"
                f"c.execute(\"attach database '{new}' as x\")\nc.execute('create table x.t(a)')\nc.commit()", kernel=True),
        Hostile("spawned child deletes outside", spawn, kernel=True),
        Hostile("reads the host's /proc", f"assert 'python' in open('/proc/{harness}/cmdline').read()", kernel=True),
        Hostile("400 threads", "import threading, time\nthreading.stack_size(65536)\n"
                "ts = [threading.Thread(target=time.sleep, args=(1,)) for _ in range(400)]\n"
                "for t in ts:\n    t.start()", kernel=True),
    ]


@contextmanager
def listeners(unix_path: str):
    """A TCP server on loopback and a unix-socket server; yields (port, connections)."""
    servers = [socket.socket(), socket.socket(socket.AF_UNIX)]
    servers[0].bind(("127.0.0.1", 0))
    servers[1].bind(unix_path)
    os.chmod(unix_path, 0o777)  # even a world-writable socket must stay out of reach
    connections, stop = [], threading.Event()

    def accept(server):
        server.listen()
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connections.append(server.accept()[0])
            except OSError:
                continue

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield servers[0].getsockname()[1], connections
    finally:
        stop.set()
        for t in threads:
            t.join()
        for s in servers + connections:
            s.close()


def canary_root() -> Path:
    """Where the canary goes: the current directory, or home when that lies under a
    directory the namespaces cover (/tmp, /run, ...), where a write would only land in the
    sandbox's own tmpfs and prove nothing."""
    here = Path.cwd().resolve()
    covered = ("/tmp", *sandbox.HIDDEN)
    return Path.home() if any(str(here) == d or str(here).startswith(d + "/") for d in covered) else here


def run_battery(root: str | Path | None = None, workers: int = 4, timeout: float = 4.0) -> list[tuple[str, str, str, bool]]:
    """Run every program; rows of (name, expected, got, ok), the harm checks last.

    ``root`` is where the canary directory is made (default: ``canary_root()``); it is removed after."""
    isolated = bool(sandbox.isolation_prefix())
    base = Path(tempfile.mkdtemp(prefix=".boe_canary_", dir=root or canary_root()))
    canary = base / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("alive")
    unix_path = str(base / "listener.sock")
    rows = []
    try:
        with listeners(unix_path) as (port, connections):
            battery = programs(canary, port, unix_path)
            chosen = [h for h in battery if isolated or not h.kernel]
            results = sandbox.run_programs([h.source for h in chosen], workers=workers, tests=[h.tests for h in chosen],
                                           timeout=timeout, memory_mb=512)
            for hostile, result in zip(chosen, results):
                rows.append((hostile.name, "fails", result.status, not result.passed))
            rows += [(h.name, "fails", "not run: no namespaces here, the guard alone lets it through", True)
                     for h in battery if h.kernel and not isolated]
            untouched = (sorted(p.name for p in canary.iterdir()) == ["keep.txt"]
                         and (canary / "keep.txt").read_text() == "alive"
                         and oct((canary / "keep.txt").stat().st_mode)[-3:] != "000")
            rows.append(("canary directory outside the sandbox", "untouched", "untouched" if untouched else "changed",
                         untouched))
            rows.append(("TCP and unix-socket listeners", "no connection", f"{len(connections)} connection(s)",
                         not connections))
        alive = sandbox.run_program("assert True").passed
        rows.append(("a fresh program after the battery", "passes", "passes" if alive else "fails", alive))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rows
