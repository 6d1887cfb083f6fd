"""The sandbox against hostile programs: every one fails, the harness and files outside survive."""
import os

import pytest

from boe_bench.scoring.sandbox import pass_at_k, run_program, run_programs


@pytest.fixture()
def canary(tmp_path):
    target = tmp_path / "canary"
    target.mkdir()
    (target / "keep.txt").write_text("alive")
    return target


def hostile_programs(canary):
    return {
        "infinite loop": "while True:\n    pass",
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "fork bomb via multiprocessing": "import multiprocessing as m\nwhile True:\n    m.Process(target=print).start()",
        "memory bomb": "x = bytearray(8 * 1024**3)\nassert x",
        "growing memory": "a = []\nwhile True:\n    a.append(' ' * 10**7)",
        "delete outside": f"import shutil\nshutil.rmtree({str(canary)!r})",
        "unlink outside": f"import os\nos.remove({str(canary / 'keep.txt')!r})",
        "write outside": f"open({str(canary / 'keep.txt')!r}, 'w').write('pwned')",
        "pathlib write outside": f"import pathlib\npathlib.Path({str(canary / 'new.txt')!r}).write_text('x')",
        "socket": "import socket\ns = socket.create_connection(('127.0.0.1', 9), timeout=1)\nassert s",
        "kill parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "subprocess": "import subprocess\nsubprocess.run(['rm', '-rf', '/tmp/x'])",
        "sys.exit(0) before the asserts": "import sys\nsys.exit(0)\nassert False",
        "os._exit(0) before the asserts": "import os\nos._exit(0)\nassert False",
        "output flood": "while True:\n    print('x' * 10000)",
        "recursion bomb": "def f(n):\n    return f(n + 1)\nf(0)",
        "failing assert": "assert 1 + 1 == 3",
        "syntax error": "def broken(:\n    pass",
    }


def test_hostile_programs_all_fail_and_nothing_outside_is_touched(canary):
    programs = hostile_programs(canary)
    results = run_programs(list(programs.values()), workers=4, timeout=3.0, memory_mb=512)
    for (name, _), result in zip(programs.items(), results):
        assert not result.passed, f"{name} passed: {result.status}"
        assert result.status.startswith(("failed", "timed out")), name
    assert (canary / "keep.txt").read_text() == "alive"
    assert not (canary / "new.txt").exists()
    assert os.getpid()  # the harness is still here to ask


def test_timeouts_are_reported_as_such():
    assert run_program("while True:\n    pass", timeout=1.0).status == "timed out"


def test_correct_programs_pass_and_may_use_their_directory():
    assert run_program("def add(a, b):\n    return a + b\nassert add(2, 3) == 5").passed
    assert run_program("open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'").passed
    assert run_program("import math, collections, re\nprint('output is fine')\nassert math.isclose(0.1 + 0.2, 0.3)").passed


def test_pass_at_k_estimator():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 1, 2) == pytest.approx(1 - (4 * 3) / (5 * 4))
