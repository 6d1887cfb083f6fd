"""The code sandbox against hostile programs: each one fails, while the harness, the files
outside the sandbox directory and listening servers on this machine are untouched; and
ordinary programs run as lm-eval's code_eval runs them."""
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


@pytest.fixture()
def outside(tmp_path):
    """A canary directory that is outside the sandbox for real: under the repository, since
    inside the namespaces /tmp is the sandbox's own tmpfs (a write there lands in it)."""
    base = Path(tempfile.mkdtemp(prefix=".boe_canary_", dir=ROOT))
    (base / "keep.txt").write_text("alive")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("isolated", [True, False])
def test_hostile_battery_all_fail_and_nothing_outside_is_touched(isolated, monkeypatch):
    if isolated and not sandbox.isolation_prefix():
        pytest.skip("no usable namespaces on this machine")
    if not isolated:  # the documented degraded mode: the guard alone, kernel-only programs not run
        monkeypatch.setattr(sandbox, "isolation_prefix", lambda: ())
    rows = run_battery(root=ROOT, workers=8)
    bad = [row for row in rows if not row[3]]
    assert not bad, bad
    assert len(rows) > 50


def test_runs_in_a_fresh_interpreter_with_ordinary_imports():
    # issue 11: in a fresh venv `threading` is not imported at start, and the old guard's
    # disabled os.register_at_fork killed `import subprocess` (and random, tempfile, logging).
    assert run_program("assert True").status == "passed"
    program = ("import random, tempfile, logging, subprocess, threading, json, collections, heapq\n"
               "random.seed(0)\nassert 0 <= random.random() < 1\n"
               "with tempfile.TemporaryDirectory() as d:\n    open(d + '/x', 'w').write('1')\n"
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


def test_fake_passes_fail():
    # issue 17.8: the nonce used to sit in the bootstrap's frame, where the program read it.
    walk = ("import sys, os\nf = sys._getframe(0)\nwhile f is not None:\n"
            "    for v in list(f.f_locals.values()):\n"
            "        for c in [v, *(x.cell_contents for x in (getattr(v, '__closure__', None) or ()))]:\n"
            "            if isinstance(c, str):\n                print(c)\n"
            "    f = f.f_back\nsys.stdout.flush()\nos._exit(0)")
    assert run_program(walk).status == "failed: exited before the end of the program"
    assert "marker" in run_program("import sys\nsys.audit('boe.sandbox.done')").status
    assert "gc.get_objects" in run_program("import gc\ngc.get_objects()").status
    # A solution that patches a builtin the tests use: the tests see the original again.
    patched = "import builtins\nbuiltins.abs = lambda x: 0\ndef f():\n    return 5"
    assert run_program(patched, tests="assert abs(f() - 1) < 1e-9").status == "failed: AssertionError"
    assert run_program(patched, tests="assert f() == 5").passed


@pytest.mark.parametrize("isolated", [True, False])
def test_escapes_of_the_in_process_guard_fail(isolated, outside, monkeypatch):
    # issue 17.9, the escapes the audit hook stops on its own (C-level events).
    if isolated and not sandbox.isolation_prefix():
        pytest.skip("no usable namespaces on this machine")
    if not isolated:
        monkeypatch.setattr(sandbox, "isolation_prefix", lambda: ())
    keep, new = str(outside / "keep.txt"), str(outside / "new.txt")
    programs = {
        "original FileIO": f"import sys\ntype(sys.stdout.buffer.raw)({keep!r}, 'w').write(b'pwned')",
        "rebuilt posix": ("import importlib.machinery as m, importlib.util as u\n"
                          "p = u.module_from_spec(m.ModuleSpec('posix', m.BuiltinImporter))\n"
                          f"m.BuiltinImporter.exec_module(p)\np.unlink({keep!r})"),
        "sqlite3 file": f"import sqlite3\nsqlite3.connect({new!r}).execute('create table t(x)')",
        "unix socket": "import socket\nsocket.socket(socket.AF_UNIX).connect('/run/any.sock')",
    }
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
    assert run_program("import os\nassert sorted(int(p) for p in os.listdir('/proc') if p.isdigit())[0] == 1").passed
    threads = ("import threading, time\nthreading.stack_size(65536)\n"
               "ts = [threading.Thread(target=time.sleep, args=(1,)) for _ in range(400)]\nfor t in ts:\n    t.start()")
    assert "can't start new thread" in run_program(threads, timeout=10.0).status
    assert run_program("import os\nassert os.getuid() != 0").passed
    # Writes outside fail at the kernel too: the program's tmpfs is the only writable place.
    assert run_program("import os\nassert os.getcwd() == '/tmp'\nopen('/tmp/x', 'w').write('ok')").passed


def test_failures_say_why():
    assert run_program("while True:\n    pass", timeout=1.0).status == "timed out"
    assert run_program("assert 1 == 2, 'off by one'").status == "failed: AssertionError: off by one"
    assert run_program("import sys\nsys.exit(0)").status == "failed: SystemExit: 0"
    assert run_program("import os\nos._exit(0)").status == "failed: exited before the end of the program"
    assert "disabled" in run_program("import os\nos.fork()").status


def test_correct_programs_pass_and_may_use_their_directory():
    assert run_program("def add(a, b):\n    return a + b\nassert add(2, 3) == 5").passed
    assert run_program("import math, collections, re\nprint('output is fine')\nassert math.isclose(0.1 + 0.2, 0.3)").passed
    scratch = ("import os, shutil, tempfile\n"
               "open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n"
               "os.makedirs('a/b')\nshutil.copy('scratch.txt', 'a/b/copy.txt')\nos.rename('a/b/copy.txt', 'a/moved.txt')\n"
               "shutil.rmtree('a')\nos.remove('scratch.txt')\n"
               "with tempfile.TemporaryDirectory() as t:\n    open(os.path.join(t, 'x'), 'w').write('1')\n")
    assert run_program(scratch).status == "passed"
    # A program that catches its own SystemExit and goes on to the end is a pass.
    assert run_program("try:\n    raise SystemExit(1)\nexcept SystemExit:\n    pass\nassert True").passed


def test_fallback_without_namespaces_still_blocks_sockets(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "isolation_prefix", lambda: ())
    with listeners(str(tmp_path / "s.sock")) as (port, connections):
        result = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
        assert not result.passed and "socket" in result.status
        assert run_program("assert sum(range(4)) == 6").passed
        assert run_program("while True:\n    pass", timeout=1.0).status == "timed out"
    assert connections == []


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
