"""The code sandbox against hostile programs: each one fails, while the harness, the files
outside the sandbox directory and a listening server on this machine are untouched."""
import math
import os
import socket
import threading

import pytest

from boe_bench.scoring import sandbox
from boe_bench.scoring.sandbox import pass_at_k, run_program, run_programs


@pytest.fixture()
def canary(tmp_path):
    target = tmp_path / "canary"
    target.mkdir()
    (target / "keep.txt").write_text("alive")
    return target


@pytest.fixture()
def listener():
    """A TCP server on loopback that records whether anyone ever connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    connections, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connections
    stop.set()
    thread.join()
    server.close()


def hostile_programs(canary, port):
    keep, new = str(canary / "keep.txt"), str(canary / "new.txt")
    harness = os.getpid()
    return {
        "infinite loop": "while True:\n    pass",
        "sleep forever": "import time\ntime.sleep(10**6)",
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "fork bomb via posix": "import posix\nwhile True:\n    posix.fork()",
        "fork bomb via multiprocessing": "import multiprocessing as m\nwhile True:\n    m.Process(target=print).start()",
        "subprocess": "import subprocess\nsubprocess.run(['sleep', '100'])",
        "os.system": "import os\nos.system('sleep 100')",
        "memory bomb": "x = bytearray(8 * 1024**3)\nassert x",
        "growing memory": "a = []\nwhile True:\n    a.append(' ' * 10**7)",
        "rmtree outside": f"import shutil\nshutil.rmtree({str(canary)!r})",
        "remove outside": f"import os\nos.remove({keep!r})",
        "unlink via posix": f"import posix\nposix.unlink({keep!r})",
        "unlink via dir_fd": f"import os\nos.unlink('keep.txt', dir_fd=os.open({str(canary)!r}, os.O_RDONLY))",
        "rename outside": f"import os\nos.rename({keep!r}, 'stolen.txt')",
        "move outside": f"import shutil\nshutil.move({keep!r}, 'stolen.txt')",
        "write outside": f"open({keep!r}, 'w').write('pwned')",
        "write outside via ..": f"import os\nopen(os.getcwd() + '/../' + {os.path.relpath(keep, '/tmp')!r}, 'w')",
        "pathlib write outside": f"import pathlib\npathlib.Path({new!r}).write_text('x')",
        "FileIO write outside": f"import io\nio.FileIO({new!r}, 'w').write(b'x')",
        "os.open write outside": f"import os\nos.write(os.open({new!r}, os.O_CREAT | os.O_WRONLY), b'x')",
        "mkdir outside": f"import os\nos.makedirs({str(canary / 'made' / 'deep')!r})",
        "chmod outside": f"import os\nos.chmod({keep!r}, 0)",
        "socket to a local server": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
        "kill parent": "import os\nos.kill(os.getppid(), 9)",
        "kill the harness by pid": f"import posix\nposix.kill({harness}, 9)",
        "kill own process group": "import os\nos.killpg(0, 9)",
        "ctypes": f"import ctypes\nctypes.CDLL(None).kill({harness}, 9)",
        "sys.exit(0) before the asserts": "import sys\nsys.exit(0)\nassert False",
        "exit() before the asserts": "exit()\nassert False",
        "raise SystemExit(0)": "raise SystemExit(0)\nassert False",
        "os._exit(0) before the asserts": "import os\nos._exit(0)\nassert False",
        "reads stdin": "input()",
        "output flood": "while True:\n    print('x' * 10000)",
        "stderr flood": "import sys\nwhile True:\n    sys.stderr.write('x' * 10000)",
        "recursion bomb": "def f(n):\n    return f(n + 1)\nf(0)",
        "deep recursion bomb": "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)",
        "failing assert": "assert 1 + 1 == 3",
        "syntax error": "def broken(:\n    pass",
    }


def test_hostile_programs_all_fail_and_nothing_outside_is_touched(canary, listener):
    port, connections = listener
    programs = hostile_programs(canary, port)
    results = run_programs(list(programs.values()), workers=8, timeout=2.0, memory_mb=512)
    for name, result in zip(programs, results):
        assert not result.passed, f"{name} passed: {result.status}"
        assert result.status.startswith(("failed: ", "timed out")), f"{name}: {result.status}"
    assert sorted(p.name for p in canary.iterdir()) == ["keep.txt"]
    assert (canary / "keep.txt").read_text() == "alive"
    assert oct((canary / "keep.txt").stat().st_mode)[-3:] != "000"
    assert connections == []  # no program reached the server
    # The harness still answers, and a fresh program still runs.
    assert run_program("assert True").passed


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


def test_fallback_without_namespaces_still_blocks_sockets(monkeypatch, listener):
    port, connections = listener
    monkeypatch.setattr(sandbox, "isolation_prefix", lambda: ())
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
