"""The sandbox's hostile battery: programs that must fail, and harm that must not happen.

Each program would, if it passed or did what it tries, show a hole: a fake pass, a file
written, read or deleted outside its directory, a process, signal or socket reaching the
host, a crash of the harness or a process that outlives its row. The battery runs them all
against a canary directory and two listeners (TCP and a unix socket) it sets up, with the
work directories under a root of its own, then checks that every program failed (the
tampering classes that lm-eval's code_eval passes too: passed by default, failed under
``strict``), that the canary, the listeners and the harness's priority were left alone, that
no work directory was left behind and that no sandbox process outlived the battery.
``python -m boe_bench.selfcheck`` and tests/test_sandbox.py both run it, the tests in both
modes (namespaces, and ``BOE_SANDBOX_NO_NAMESPACES=1``: Landlock, seccomp and the guard).

Programs marked ``kernel`` are stopped by a kernel wall only (Landlock, seccomp or the
namespaces; the in-process guard cannot see ``dir_fd`` opens, SQL ``ATTACH``,
``_posixsubprocess`` or flag-setting ``ioctl``): where no kernel wall stands they are not run.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from boe_bench.scoring import sandbox


@dataclass(frozen=True)
class Hostile:
    name: str
    source: str
    tests: str | None = None  # run after ``source`` as the code tasks run their tests
    kernel: bool = False  # only a kernel wall stops it
    undo: bool = True  # first undo what code_eval's guard sets to None, so the walls themselves are tried
    lmeval_passes: bool = False  # lm-eval's code_eval passes it too: passes by default, fails under strict
    context: str | None = None  # strict: the task's own context (HumanEval's prompt)
    entry: tuple[str, ...] = ("f",)  # strict: the names the tests take from the solution
    leaks: str | None = None  # a string that must not appear in its failure message


def programs(canary: Path, port: int, unix_path: str) -> list[Hostile]:
    keep, new = str(canary / "keep.txt"), str(canary / "new.txt")
    harness = os.getpid()
    reference = str(Path(__file__).resolve().parents[1] / "data" / "selfcheck" / "humaneval.jsonl")
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
        Hostile("exit() before the asserts", "exit()\nassert False", undo=False),
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
        Hostile("installs its own audit hook", "import sys\ncalls = []\nsys.addaudithook(lambda e, a: calls.append(e))\n"
                "open('x', 'w')\nassert calls"),
        # issue 17, item 9: escapes of the in-process guard
        Hostile("original FileIO class", f"type(open('x', 'wb').raw)({keep!r}, 'w').write(b'pwned')"),
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
        # issue 22: forging the pass marker from a frame the harness runs
        Hostile("marker from an exception's __str__ (C partial)",
                "import sys, functools\nw = sys._getframe(0).f_back\nclass E(Exception):\n    pass\n"
                "E.__str__ = functools.partial(sys.audit, 'boe.sandbox.done', w)\nraise E()"),
        Hostile("marker from an exception's __str__ (Python)",
                "import sys\nw = sys._getframe(0).f_back\nclass E(Exception):\n"
                "    def __str__(self):\n        sys.audit('boe.sandbox.done', w)\n        return 'x'\nraise E()"),
        Hostile("marker from a metaclass __name__ property",
                "import sys\nw = sys._getframe(0).f_back\nclass M(type):\n"
                "    __name__ = property(lambda c: sys.audit('boe.sandbox.done', w) or 'M')\n"
                "class E(Exception, metaclass=M):\n    pass\nraise E()"),
        Hostile("marker from a __del__ during the strict restore",
                "import sys, builtins\nw = sys._getframe(0).f_back\nclass D:\n"
                "    __del__ = lambda self: sys.audit('boe.sandbox.done', w)\nbuiltins.abs = D()\ndef f():\n    return 1",
                tests="assert f() == 2"),
        Hostile("marker with the harness's frame, raised early", "import sys\nsys.audit('boe.sandbox.done', sys._getframe(1))"),
        Hostile("reads the hook's frames from a refused call's traceback",
                "import os, sys\ntry:\n    os.fork()\nexcept PermissionError as e:\n    tb = e.__traceback__\n"
                "    while tb is not None:\n        f = tb.tb_frame\n        for v in list(f.f_locals.values()):\n"
                "            c = getattr(v, '__closure__', None) or ()\n"
                "            for x in c:\n                print(x.cell_contents)\n        tb = tb.tb_next\n"
                "os._exit(0)"),
        Hostile("reads the guard's code constants",
                "import os, sys\ntry:\n    os.fork()\nexcept PermissionError as e:\n    tb = e.__traceback__.tb_next\n"
                "    print(tb.tb_frame.f_code.co_consts)\nos._exit(0)"),
        Hostile("writes every 32-hex string it finds to every fd",
                "import os, sys, re\nfound = set()\nf = sys._getframe(0)\nwhile f is not None:\n"
                "    found |= set(re.findall('[0-9a-f]{32}', repr(f.f_locals)))\n    f = f.f_back\n"
                "for s in found:\n    for fd in range(3, 12):\n        try:\n            os.write(fd, ('\\n' + s + '\\n').encode())\n"
                "        except OSError:\n            pass\nos._exit(0)"),
        # issue 22: reading the answers
        Hostile("reads the tests from the caller's frame",
                "import sys\ndef f():\n    g = sys._getframe(1)\n    while g is not None:\n"
                "        for k, v in g.f_locals.items():\n            if isinstance(v, str) and 'assert' in v:\n"
                "                return 2\n        g = g.f_back\n    return 0", tests="assert f() == 2"),
        Hostile("reads the tests' code object while they run",
                "import sys\ndef f():\n    return sys._getframe(1).f_code.co_consts[0]", tests="assert f() == 'x'"),
        Hostile("reads the check function's constants",
                "def f(x):\n    return globals()['check'].__code__.co_consts[-1]",
                tests="def check(c):\n    assert c(1) == 12345\ncheck(f)"),
        Hostile("keeps a thread running into the tests",
                "import threading, time\ndef spy():\n    time.sleep(0.5)\n"
                "threading.Thread(target=spy).start()\ndef f():\n    return 1", tests="assert f() == 1"),
        Hostile("reads the shipped reference solutions", f"print(open({reference!r}).read())\nassert False",
                kernel=True),
        # issue 22: pleasing the asserts by tampering (lm-eval passes these too)
        Hostile("global shadows a builtin", "abs = lambda x: 0\ndef f():\n    return 5",
                tests="assert abs(f() - 1) < 1e-9", lmeval_passes=True),
        Hostile("patches builtins the tests use", "import builtins\nbuiltins.abs = lambda x: 0\ndef f():\n    return 5",
                tests="assert abs(f() - 1) < 1e-9", lmeval_passes=True),
        Hostile("swaps the __builtins__ dict",
                "import builtins\nb = dict(builtins.__dict__)\nb['abs'] = lambda x: 0\n__builtins__ = b\n"
                "def f():\n    return 5", tests="assert abs(f() - 1) < 1e-9", lmeval_passes=True),
        Hostile("patches a module function", "import math\nmath.fabs = lambda x: 0\ndef f():\n    return 5",
                tests="import math\nassert math.fabs(f() - 1) < 1e-9", lmeval_passes=True),
        Hostile("redefines the prompt's helper",
                "def helper(x):\n    return 0\ndef f(x):\n    return 7", tests="assert helper(f(1)) == 0",
                lmeval_passes=True, context="def helper(x):\n    return x + 1\ndef f(x):\n    'doc'\n"),
        Hostile("returns a str subclass equal to everything",
                "class S(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
                "def f():\n    return S('no')", tests="assert f() == 'yes'", lmeval_passes=True),
        # issue 22: escapes of the guard alone
        Hostile("os.open with dir_fd writes outside",
                f"import os\nd = os.open({str(canary)!r}, os.O_RDONLY)\n"
                "os.write(os.open('keep.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=d), b'pwned')", kernel=True),
        Hostile("open with an opener writes outside",
                f"import os\nd = os.open({str(canary)!r}, os.O_RDONLY)\n"
                "open('new.txt', 'w', opener=lambda p, fl: os.open(p, fl, dir_fd=d)).write('x')", kernel=True),
        Hostile("reads /proc/self/mem through dir_fd",
                "import os\nd = os.open('/proc/self', os.O_RDONLY)\nos.open('mem', os.O_RDONLY, dir_fd=d)\nos._exit(0)",
                kernel=True),
        Hostile("reads the harness's memory through dir_fd",
                "import os\nd = os.open('/proc', os.O_RDONLY)\nos.open(str(os.getppid()) + '/mem', os.O_RDONLY, dir_fd=d)",
                kernel=True),
        Hostile("sqlite3 URI outside", f"import sqlite3\nsqlite3.connect('file:{new}?mode=rwc', uri=True).execute('create table t(x)')"),
        Hostile("makes an outside file immutable",
                f"import os, fcntl, struct\nfd = os.open({keep!r}, os.O_RDONLY)\n"
                "fcntl.ioctl(fd, 0x40086602, struct.pack('i', 0x10))", kernel=True),
        Hostile("renices the harness", f"import os\nos.setpriority(os.PRIO_PROCESS, {harness}, 19)", kernel=True),
        Hostile("300 processes through _posixsubprocess",
                "import multiprocessing, time\nctx = multiprocessing.get_context('spawn')\n"
                "ps = [ctx.Process(target=time.sleep, args=(30,)) for _ in range(300)]\nfor p in ps:\n    p.start()",
                kernel=True),
        Hostile("setsid grandchild writes after the timeout",
                "import multiprocessing, os, time\n"
                f"def later():\n    os.setsid()\n    time.sleep(6)\n    open({new!r}, 'w').write('late')\n"
                "multiprocessing.get_context('spawn').Process(target=later).start()\ntime.sleep(100)", kernel=True),
        Hostile("150 files of 1 MB", "for i in range(150):\n    open(f'f{i}', 'w').write('x' * 10**6)"),
        Hostile("leaks /etc/shadow through its failure message", "raise Exception(open('/etc/shadow').read()[:200])",
                kernel=True, leaks="root:"),
        Hostile("leaks a listing of /root", "import os\nraise Exception(str(os.listdir('/root')))", kernel=True,
                leaks="'.bashrc'"),
        Hostile("kills the harness through a pidfd",
                "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), 9)", kernel=True),
        Hostile("installs a signal handler to run inside the hook",
                "import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)\nsignal.setitimer(signal.ITIMER_REAL, 0.001)",
                kernel=True),
        # issue 22: harness crashes
        Hostile("an immutable file in its work dir",
                "import os, fcntl, struct\nfd = os.open('x', os.O_CREAT | os.O_WRONLY)\n"
                "fcntl.ioctl(fd, 0x40086602, struct.pack('i', 0x10))", kernel=True),
        Hostile("a 1,500-deep directory chain",
                "import posix\nfor i in range(1500):\n    posix.mkdir('d')\n    posix.chdir('d')\nassert False"),
        Hostile("three children of 450 MB each",
                "import multiprocessing, time\nctx = multiprocessing.get_context('spawn')\n"
                "def hold():\n    x = bytearray(450 * 2**20)\n    time.sleep(5)\n"
                "ps = [ctx.Process(target=hold) for _ in range(3)]\nfor p in ps:\n    p.start()\ntime.sleep(5)", kernel=True),
    ]


# A hostile program's first move: put back what code_eval's reliability guard set to None.
UNDO = "import importlib, os, shutil, subprocess\nfor _m in (os, shutil, subprocess):\n    importlib.reload(_m)\n"


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


def _pinned(path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return bool(int.from_bytes(fcntl.ioctl(fd, sandbox.FS_IOC_GETFLAGS, bytes(8))[:4], "little") & sandbox.PINNED)
    except OSError:
        return False
    finally:
        os.close(fd)


def _survivors(tag: str) -> int:
    """Processes whose command line names a work directory under ``tag``."""
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                count += tag.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                pass
    return count


def run_battery(root: str | Path | None = None, workers: int = 4, timeout: float = 4.0) -> list[tuple[str, str, str, bool]]:
    """Run every program; rows of (name, expected, got, ok), the harm checks last.

    A program with tests runs in both modes (default and ``strict``); the tampering classes
    lm-eval passes must pass by default and fail under ``strict``, everything else must fail
    in both. ``root`` is where the canary and work directories are made (default:
    ``canary_root()``); they are removed after."""
    w = sandbox.walls()
    kernel = bool(w.prefix or w.landlock or w.seccomp)
    base = Path(tempfile.mkdtemp(prefix=".boe_canary_", dir=root or canary_root()))
    canary, work = base / "canary", base / "work"
    canary.mkdir()
    work.mkdir()
    (canary / "keep.txt").write_text("alive")
    unix_path = str(base / "listener.sock")
    priority = os.getpriority(os.PRIO_PROCESS, 0)
    rows, previous_root = [], sandbox.WORK_ROOT
    sandbox.WORK_ROOT = str(work)
    try:
        with listeners(unix_path) as (port, connections):
            battery = programs(canary, port, unix_path)
            chosen = [h for h in battery if kernel or not h.kernel]
            jobs = [(h, False) for h in chosen] + [(h, True) for h in chosen if h.tests is not None]

            def one(job):
                hostile, strict = job
                source = (UNDO if hostile.undo else "") + hostile.source
                return sandbox.run_program(source, tests=hostile.tests, timeout=timeout, memory_mb=512,
                                           strict=strict, context=hostile.context, entry=hostile.entry)

            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                results = list(pool.map(one, jobs))
            for (hostile, strict), result in zip(jobs, results):
                name = hostile.name + (" [strict]" if strict else "")
                if hostile.lmeval_passes and not strict:
                    rows.append((name, "passes (as under lm-eval)", result.status, result.passed))
                    continue
                leaked = hostile.leaks is not None and hostile.leaks in result.status
                rows.append((name, "fails", result.status + (" (LEAKED)" if leaked else ""),
                             not result.passed and not leaked))
            rows += [(h.name, "fails", "not run: no kernel wall here, the guard alone lets it through", True)
                     for h in battery if h.kernel and not kernel]
            time.sleep(0.5)
            untouched = (sorted(p.name for p in canary.iterdir()) == ["keep.txt"]
                         and (canary / "keep.txt").read_text() == "alive"
                         and oct((canary / "keep.txt").stat().st_mode)[-3:] != "000"
                         and not _pinned(canary / "keep.txt"))
            rows.append(("canary directory outside the sandbox", "untouched", "untouched" if untouched else "changed",
                         untouched))
            rows.append(("TCP and unix-socket listeners", "no connection", f"{len(connections)} connection(s)",
                         not connections))
        niced = os.getpriority(os.PRIO_PROCESS, 0)
        rows.append(("the harness's priority", str(priority), str(niced), niced == priority))
        left = sorted(p.name for p in work.iterdir())
        rows.append(("work directories", "all removed", f"{len(left)} left" if left else "all removed", not left))
        survivors = _survivors(str(work))
        rows.append(("sandbox processes after the battery", "none", str(survivors), survivors == 0))
        alive = sandbox.run_program("assert True").passed
        rows.append(("a fresh program after the battery", "passes", "passes" if alive else "fails", alive))
    finally:
        sandbox.WORK_ROOT = previous_root
        sandbox.remove_tree(str(base))
    return rows
