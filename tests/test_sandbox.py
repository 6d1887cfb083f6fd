"""The code sandbox against hostile programs: each one fails, while the harness, the files
outside the sandbox directory and listening servers on this machine are untouched; and
ordinary programs run as lm-eval's code_eval runs them. Both modes: namespaces, and
``BOE_SANDBOX_NO_NAMESPACES=1`` (Landlock, seccomp and the guard, as in a container)."""
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from boe_bench.scoring import sandbox
from boe_bench.scoring.hostile import listeners, run_battery
from boe_bench.scoring.sandbox import pass_at_k, run_program, run_programs


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["namespaces", "no namespaces"])
def mode(request, monkeypatch):
    """Each test that takes it runs with namespaces and with them forced off."""
    if request.param == "no namespaces":
        monkeypatch.setenv(sandbox.NO_NAMESPACES, "1")
    else:
        monkeypatch.delenv(sandbox.NO_NAMESPACES, raising=False)
    sandbox.walls.cache_clear()
    if request.param == "namespaces" and not sandbox.walls().prefix:
        pytest.skip("no usable namespaces on this machine")
    yield request.param
    sandbox.walls.cache_clear()


@pytest.fixture()
def outside(tmp_path):
    """A canary directory that is outside the sandbox for real: under the repository, since
    inside the namespaces /tmp is the sandbox's own tmpfs (a write there lands in it)."""
    base = Path(tempfile.mkdtemp(prefix=".boe_canary_", dir=ROOT))
    (base / "keep.txt").write_text("alive")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_hostile_battery_all_fail_and_nothing_outside_is_touched(mode):
    rows = run_battery(root=ROOT, workers=8)
    bad = [row for row in rows if not row[3]]
    assert not bad, bad
    assert len(rows) > 100
    # the tampering classes lm-eval passes too pass by default and fail under strict
    lmeval = [r for r in rows if r[1] == "passes (as under lm-eval)"]
    assert len(lmeval) == 6 and all(r[2] == "passed" for r in lmeval)


def test_walls_are_reported(mode):
    words = sandbox.isolation()
    assert ("no namespaces" in words) == (mode == "no namespaces") and "in-process guard" in words
    if sandbox.landlock_abi() and sandbox.seccomp_library():  # this machine: both stand in both modes
        assert "Landlock ABI" in words and "seccomp" in words and "no seccomp" not in words


def test_runs_in_a_fresh_interpreter_with_ordinary_imports():
    # issue 11: in a fresh venv `threading` is not imported at start, and the old guard's
    # disabled os.register_at_fork killed `import subprocess` (and random, tempfile, logging).
    assert run_program("assert True").status == "passed"
    program = ("import random, tempfile, logging, subprocess, threading, json, collections, heapq\n"
               "random.seed(0)\nassert 0 <= random.random() < 1\n"
               "d = tempfile.mkdtemp()\nopen(d + '/x', 'w').write('1')\n"
               "logging.getLogger('x').warning('logging works')\n"
               "t = threading.Thread(target=lambda: None)\nt.start()\nt.join()")
    assert run_program(program).status == "passed"


def test_programs_get_lm_eval_globals():
    # issue 12: code_eval runs exec(program, {}): __name__ is 'builtins', so a
    # `if __name__ == '__main__':` block is skipped, and the globals start empty.
    assert run_program("assert __name__ == 'builtins'").passed
    assert run_program("if __name__ == '__main__':\n    raise SystemExit(1)\nassert True").passed
    assert run_program("assert sorted(globals()) == ['__builtins__']").passed
    # The tests run in the solution's globals, as if appended to it.
    assert run_program("def f():\n    return 2", tests="assert f() == 2").passed
    assert not run_program("def f():\n    return 2", tests="assert f() == 3").passed


def test_deleting_its_own_working_directory_fails_without_hurting_the_harness():
    # issue 17.7: this used to raise FileNotFoundError in the harness (its output files sat there).
    for program in ("import os, shutil\nshutil.rmtree(os.getcwd())", "import os\nos.rmdir(os.getcwd())"):
        result = run_program(program)
        assert result.status.startswith("failed: "), result
    assert run_program("assert True").passed


def test_fake_passes_fail(mode):
    # issue 17.8: the nonce used to sit in the bootstrap's frame, where the program read it.
    walk = ("import sys, posix\nf = sys._getframe(0)\nwhile f is not None:\n"
            "    for v in list(f.f_locals.values()):\n"
            "        for c in [v, *(x.cell_contents for x in (getattr(v, '__closure__', None) or ()))]:\n"
            "            if isinstance(c, str):\n                print(c)\n"
            "    f = f.f_back\nposix._exit(0)")
    assert run_program(walk).status == "failed: exited before the end of the program"
    assert "marker" in run_program("import sys\nsys.audit('boe.sandbox.done', sys._getframe(1))").status
    assert "gc.get_objects" in run_program("import gc\ngc.get_objects()").status
    # issue 22: a program-controlled callable the harness calls from its own frame (an
    # exception's __str__, a metaclass __name__) raising the marker with that very frame.
    for hook in ("E.__str__ = functools.partial(sys.audit, 'boe.sandbox.done', w)",
                 "E.__str__ = lambda self: sys.audit('boe.sandbox.done', w) or ''"):
        forged = f"import sys, functools\nw = sys._getframe(0).f_back\nclass E(Exception):\n    pass\n{hook}\nraise E()"
        assert not run_program(forged).passed
    # the hook's frames hold nothing: a refused call's traceback does not reach them
    traced = ("import posix\ntry:\n    posix.fork()\nexcept PermissionError as e:\n"
              "    e.__traceback__.tb_next.tb_frame")
    assert "the guard's frames are off limits" in run_program(traced).status


def test_tests_are_not_readable_from_the_program(mode):
    read = ("import sys\ndef f():\n    g = sys._getframe(1)\n    while g is not None:\n"
            "        if any(isinstance(v, str) and 'assert' in v for v in g.f_locals.values()):\n"
            "            return 2\n        g = g.f_back\n    return 0")
    assert "sys._getframe is refused while the tests run" in run_program(read, tests="assert f() == 2").status
    consts = "def f(x):\n    return globals()['check'].__code__.co_consts[-1]"
    assert not run_program(consts, tests="def check(c):\n    assert c(1) == 12345\ncheck(f)").passed
    # before the tests nothing in reach holds them
    early = ("import sys\nassert 'distinct' + 'ive-77' not in repr([f.f_locals for f in [sys._getframe(1)]])\n"
             "def f():\n    return 2")
    assert run_program(early, tests="assert f() == 2  # distinctive-77").passed


@pytest.mark.parametrize("strict", [False, True])
def test_tampering_keeps_lm_eval_verdicts_by_default_and_fails_under_strict(strict):
    cases = {
        "global shadow": ("abs = lambda x: 0\ndef f():\n    return 5", "assert abs(f() - 1) < 1e-9", None),
        "builtins patched": ("import builtins\nbuiltins.abs = lambda x: 0\ndef f():\n    return 5",
                             "assert abs(f() - 1) < 1e-9", None),
        "module patched": ("import math\nmath.fabs = lambda x: 0\ndef f():\n    return 5",
                           "import math\nassert math.fabs(f() - 1) < 1e-9", None),
        "helper redefined": ("def helper(x):\n    return 0\ndef f(x):\n    return 7", "assert helper(f(1)) == 0",
                             "def helper(x):\n    return x + 1\ndef f(x):\n    'doc'\n"),
        "always-equal str": ("class S(str):\n    __eq__ = lambda s, o: True\n    __hash__ = str.__hash__\n"
                             "def f():\n    return S('no')", "assert f() == 'yes'", None),
    }
    for name, (solution, tests, context) in cases.items():
        result = run_program(solution, tests=tests, strict=strict, context=context, entry=["f"])
        assert result.passed != strict, (name, result)
    # an honest solution passes strict, helpers from the context included
    prompt = "def helper(x):\n    return x + 1\n"
    assert run_program(prompt + "def f(x):\n    return helper(x) * 2", tests="assert f(1) == 4 and helper(1) == 2",
                       strict=True, context=prompt, entry=["f"]).passed


def test_code_eval_rules():
    # HF evaluate's code_eval (lm-eval's humaneval/mbpp): its guard sets these to None, stdin reads raise
    # OSError, output is swallowed whatever its size, a SIGALRM after the timeout raises.
    assert run_program("import os\nos.getcwd()").status == "failed: TypeError: 'NoneType' object is not callable"
    assert not run_program("import tempfile\nwith tempfile.TemporaryDirectory():\n    pass").passed
    assert run_program("import tempfile\ntempfile.mkdtemp()").passed
    assert run_program("import sys\nsys.stdin.read()").status == "failed: OSError"
    assert run_program("input()").status == "failed: OSError"
    assert run_program("print('x' * 3_000_000)\nimport sys\nsys.stderr.write('y' * 3_000_000)").passed
    assert not run_program("import resource").passed and not run_program("exit()").passed
    assert run_program("import time\ntime.sleep(5)", timeout=1.0).status == "timed out"
    assert run_program("import numpy\nassert numpy.arange(4).sum() == 6").passed


def test_work_directory_removed_whatever_is_left(tmp_path):
    import fcntl
    import struct

    deep = tmp_path / "deep"
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY)
    for _ in range(1500):  # deeper than the recursion limit
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    (tmp_path / "deep" / "locked").mkdir()
    (tmp_path / "deep" / "locked" / "f").write_text("x")
    os.chmod(tmp_path / "deep" / "locked", 0)
    pinned = tmp_path / "deep" / "pinned"
    pinned.write_text("x")
    if os.geteuid() == 0:
        with open(pinned) as f:
            try:
                fcntl.ioctl(f.fileno(), sandbox.FS_IOC_SETFLAGS, struct.pack("i", 0x10) + bytes(4))
            except OSError:
                pass  # a filesystem without flags (tmpfs): the rest still holds
    assert sandbox.remove_tree(str(deep)) and not deep.exists()


def test_escapes_of_the_in_process_guard_fail(mode, outside):
    # issue 17.9 and 22: escapes of the audit hook alone (C-level events, dir_fd, sqlite URIs).
    keep, new = str(outside / "keep.txt"), str(outside / "new.txt")
    programs = {
        "original FileIO": f"type(open('x', 'wb').raw)({keep!r}, 'w').write(b'pwned')",
        "rebuilt posix": ("import importlib.machinery as m, importlib.util as u\n"
                          "p = u.module_from_spec(m.ModuleSpec('posix', m.BuiltinImporter))\n"
                          f"m.BuiltinImporter.exec_module(p)\np.unlink({keep!r})"),
        "sqlite3 file": f"import sqlite3\nsqlite3.connect({new!r}).execute('create table t(x)')",
        "sqlite3 uri": f"import sqlite3\nsqlite3.connect('file:{new}?mode=rwc', uri=True).execute('create table t(x)')",
        "unix socket": "import socket\nsocket.socket(socket.AF_UNIX).connect('/run/any.sock')",
        "dir_fd write": f"import posix\nd = posix.open({str(outside)!r}, posix.O_RDONLY)\n"
                        "posix.write(posix.open('keep.txt', posix.O_WRONLY | posix.O_TRUNC, dir_fd=d), b'pwned')",
    }
    if sandbox.walls().landlock:  # only Landlock keeps world-readable files from the program
        programs["reference data"] = f"open({str(ROOT / 'tests' / 'fixtures' / 'humaneval.jsonl')!r}).read()"
    elif not sandbox.walls().prefix:
        del programs["dir_fd write"]  # the guard alone cannot see dir_fd
    results = run_programs(list(programs.values()), workers=4)
    for name, result in zip(programs, results):
        assert not result.passed, (name, result)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"] and (outside / "keep.txt").read_text() == "alive"


@pytest.mark.skipif(not sandbox.isolation_prefix(), reason="no usable namespaces on this machine")
def test_kernel_wall_where_namespaces_work(outside):
    # issue 17.9, what only the kernel stops: SQL ATTACH writes without an audit event, the
    # host's /proc, and threads past RLIMIT_NPROC (which never binds root).
    new = str(outside / "new.txt")
    attach = (f"import sqlite3\nc = sqlite3.connect(':memory:')\nc.execute(\"attach database '{new}' as x\")\n"
              "c.execute('create table x.t(a)')\nc.commit()")
    assert not run_program(attach).passed and not Path(new).exists()
    assert not run_program(f"open('/proc/{os.getpid()}/cmdline').read()").passed
    if sandbox.walls().landlock:  # /proc is not among what the program may read
        assert not run_program("import os\nos.listdir('/proc')").passed
    else:
        assert run_program("import os\nassert sorted(int(p) for p in os.listdir('/proc') if p.isdigit())[0] == 1").passed
    threads = ("import threading, time\nthreading.stack_size(65536)\n"
               "ts = [threading.Thread(target=time.sleep, args=(1,)) for _ in range(400)]\nfor t in ts:\n    t.start()")
    assert "can't start new thread" in run_program(threads, timeout=10.0).status
    assert run_program("import os\nassert os.getuid() != 0").passed
    # Writes outside fail at the kernel too: the program's tmpfs is the only writable place.
    assert run_program("import posix\nassert posix.getcwd() == '/tmp'\nopen('/tmp/x', 'w').write('ok')").passed


def test_failures_say_why():
    assert run_program("while True:\n    pass", timeout=1.0).status == "timed out"
    assert run_program("assert 1 == 2, 'off by one'").status == "failed: AssertionError: off by one"
    assert run_program("import sys\nsys.exit(0)").status == "failed: SystemExit: 0"
    assert run_program("import os\nos._exit(0)").status == "failed: exited before the end of the program"
    assert "disabled" in run_program("import posix\nposix.fork()").status


def test_correct_programs_pass_and_may_use_their_directory():
    assert run_program("def add(a, b):\n    return a + b\nassert add(2, 3) == 5").passed
    assert run_program("import math, collections, re\nprint('output is fine')\nassert math.isclose(0.1 + 0.2, 0.3)").passed
    scratch = ("import os, shutil, tempfile\n"
               "open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n"
               "os.makedirs('a/b')\nshutil.copyfile('scratch.txt', 'a/b/copy.txt')\nassert os.listdir('a/b') == ['copy.txt']\n"
               "d = tempfile.mkdtemp()\nopen(os.path.join(d, 'x'), 'w').write('1')\n")
    assert run_program(scratch).status == "passed"
    # shutil.copy sets the mode with os.chmod, which code_eval's guard sets to None: a failure there too
    assert "NoneType" in run_program("import shutil\nopen('s', 'w').write('1')\nshutil.copy('s', 't')").status
    # A program that catches its own SystemExit and goes on to the end is a pass.
    assert run_program("try:\n    raise SystemExit(1)\nexcept SystemExit:\n    pass\nassert True").passed


def test_fallback_without_namespaces_still_blocks_sockets(monkeypatch, tmp_path):
    monkeypatch.setenv(sandbox.NO_NAMESPACES, "1")
    sandbox.walls.cache_clear()
    try:
        with listeners(str(tmp_path / "s.sock")) as (port, connections):
            result = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
            assert not result.passed
            assert run_program("assert sum(range(4)) == 6").passed
            assert run_program("while True:\n    pass", timeout=1.0).status == "timed out"
        assert connections == []
    finally:
        sandbox.walls.cache_clear()


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20])
def test_pass_at_k_matches_the_combinatorial_definition(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            exact = 1 - math.comb(n - c, k) / math.comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert pass_at_k(n, 1, 1) == pytest.approx(1 / n)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
