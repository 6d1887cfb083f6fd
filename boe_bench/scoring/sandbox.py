"""Running model-written programs without trusting them.

Each program runs in its own process, in a fresh temporary directory, under CPU, memory,
file-size and process rlimits, in its own session (so a timeout kills everything it
started), without network (a new network namespace via ``unshare -n`` where the machine
allows it; otherwise socket creation is disabled inside the child), with output capped, and
with the os/shutil/subprocess functions that delete, spawn or signal disabled before the
program starts. A program passes only if it runs to its end: the child then prints a
nonce it read from stdin before the program started, which the program cannot know, so
``sys.exit(0)`` or ``os._exit(0)`` half-way is a failure, not a pass.

These are guards against accidents and careless code, not a security boundary against a
determined adversary (ctypes can undo any in-process guard): run untrusted benchmarks in a
container as well.
"""
from __future__ import annotations

import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

BOOTSTRAP = r'''
import builtins, io, os, sys
nonce = sys.stdin.readline().strip()
sys.stdin.close()
source = open("program.py").read()
_exit, _write, _realpath, _open, _os_open = os._exit, os.write, os.path.realpath, builtins.open, os.open
home = _realpath(os.getcwd())

def inside(path):
    return _realpath(path).startswith(home + os.sep) or _realpath(path) == home

def guarded_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and any(m in mode for m in "wax+") and not inside(os.fsdecode(file)):
        raise PermissionError(f"sandbox: writing outside the working directory: {file}")
    return _open(file, mode, *args, **kwargs)

def guarded_os_open(path, flags, *args, **kwargs):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC) and not inside(os.fsdecode(path)):
        raise PermissionError(f"sandbox: writing outside the working directory: {path}")
    return _os_open(path, flags, *args, **kwargs)

def forbidden(name):
    def refuse(*args, **kwargs):
        raise PermissionError(f"sandbox: {name} is disabled")
    return refuse

builtins.open = io.open = guarded_open
os.open = guarded_os_open
for name in ("kill", "killpg", "fork", "forkpty", "vfork", "system", "popen", "execv", "execve", "execvp",
             "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
             "posix_spawn", "posix_spawnp", "remove", "unlink", "rmdir", "removedirs", "rename", "renames",
             "replace", "truncate", "chmod", "chown", "lchown", "setuid", "setgid", "putenv", "chdir",
             "fchdir", "chroot", "symlink", "link", "abort"):
    if hasattr(os, name):
        setattr(os, name, forbidden("os." + name))
import shutil, subprocess, socket, signal
for name in ("rmtree", "move", "chown", "copytree", "copy", "copy2", "copyfile"):
    setattr(shutil, name, forbidden("shutil." + name))
for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
    setattr(subprocess, name, forbidden("subprocess." + name))
if os.environ.get("BOE_SANDBOX_NO_NETNS"):
    socket.socket = forbidden("socket.socket")
for name in ("pthread_kill", "raise_signal"):
    setattr(signal, name, forbidden("signal." + name))
sys.modules["ctypes"] = None
try:
    exec(compile(source, "program.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
except BaseException as err:
    sys.stderr.write(f"{type(err).__name__}: {str(err)[:300]}\n")
    sys.stderr.flush()
    _exit(1)
sys.stdout.flush()
_write(1, ("\n" + nonce + "\n").encode())
_exit(0)
'''


@dataclass
class ExecResult:
    passed: bool
    status: str  # "passed" | "failed: <reason>" | "timed out"


@lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _limits(cpu_s: int, memory_mb: int, output_bytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes, output_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_program(source: str, timeout: float = 5.0, memory_mb: int = 1024, output_bytes: int = 1_000_000) -> ExecResult:
    """Run one program; passed means it ran to its end without raising."""
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="boe_sandbox_") as workdir:
        Path(workdir, "program.py").write_text(source)
        Path(workdir, "boot.py").write_text(BOOTSTRAP)
        command = [sys.executable, "-I", "boot.py"]
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        if network_namespace_available():
            command = ["unshare", "-rn", *command]
        else:
            env["BOE_SANDBOX_NO_NETNS"] = "1"
        with open(Path(workdir, "stdout"), "wb") as out, open(Path(workdir, "stderr"), "wb") as err:
            try:
                proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                        start_new_session=True,
                                        preexec_fn=_limits(int(timeout) + 1, memory_mb, output_bytes))
            except OSError as error:
                return ExecResult(False, f"failed: could not start: {error}")
            try:
                proc.communicate((nonce + "\n").encode(), timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_session(proc)
                return ExecResult(False, "timed out")
            finally:
                _kill_session(proc)
        stdout = Path(workdir, "stdout").read_bytes()[-output_bytes:]
        stderr = Path(workdir, "stderr").read_bytes()[-2000:].decode(errors="replace").strip()
    if proc.returncode == 0 and stdout.rstrip().endswith(nonce.encode()):
        return ExecResult(True, "passed")
    reason = stderr.splitlines()[-1] if stderr else f"exit code {proc.returncode}"
    return ExecResult(False, f"failed: {reason}")


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_programs(sources: list[str], workers: int = 4, **limits) -> list[ExecResult]:
    """Many programs at once; each in its own process, so one crash or hang stalls nothing."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: run_program(s, **limits), sources))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1 - k / i
    return 1.0 - prob_all_fail
