"""Running model-written programs without trusting them.

Each program runs in its own process, in a fresh temporary directory, under CPU, memory,
file-size (output) and process rlimits, in its own session, with stdin closed, and with the
os/posix/shutil/subprocess functions that delete, spawn, signal or leave the directory
disabled before the program starts (our reliability guard). Where the machine allows
unprivileged namespaces (``unshare -rnp --fork --kill-child true`` succeeds) it also runs in
a new network namespace (no network at all) and a new PID namespace (it cannot see or signal
the harness, and every process it starts dies with it); without them, socket creation is
disabled inside the child instead and a timeout kills the child's process group. Many
programs run in a thread pool, each thread waiting on its own subprocess, so a crash or hang
of one never stalls the others.

A program passes only by running to its end: the child then prints a nonce it read from
stdin before the program started, so ``sys.exit(0)`` or ``os._exit(0)`` before the asserts
is a failure, not a pass.

These are guards against accidents and careless code, not a security boundary against a
determined adversary (in-process guards can be undone from inside the process, and files
outside the directory are protected by the guard, not by the kernel): run untrusted
benchmarks in a container or as an unprivileged user as well.
"""
from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Runs as the child's main script. Order matters: read the nonce, set limits, install the
# guard, then run the program; whatever the program does, it cannot reach the last line early.
BOOTSTRAP = r'''
import builtins, io, _io, os, posix, resource, sys, types

def main():
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    cpu_s, memory_bytes, output_bytes, processes, no_network = (int(a) for a in sys.argv[1:6])
    for limit, value in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_AS, memory_bytes),
                         (resource.RLIMIT_FSIZE, output_bytes), (resource.RLIMIT_NPROC, processes),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    with open("program.py") as f:
        source = f.read()
    exit_now, write, realpath = os._exit, os.write, os.path.realpath
    home = realpath(os.getcwd())

    def inside(path, dir_fd=None):
        path = os.fsdecode(path)
        if dir_fd is not None and not os.path.isabs(path):
            # fd-relative calls (shutil.rmtree makes them) are judged by the directory's real path.
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        resolved = realpath(path)
        return resolved == home or resolved.startswith(home + os.sep)

    def writes(mode):
        return any(m in str(mode) for m in "wax+")

    original_open = _io.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and writes(mode) and not inside(file):
            raise PermissionError(f"sandbox: writing outside the working directory: {file}")
        return original_open(file, mode, *args, **kwargs)

    class GuardedFileIO(_io.FileIO):
        def __init__(self, file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and writes(mode) and not inside(file):
                raise PermissionError(f"sandbox: writing outside the working directory: {file}")
            super().__init__(file, mode, *args, **kwargs)

    original_os_open = posix.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path):
            raise PermissionError(f"sandbox: writing outside the working directory: {path}")
        return original_os_open(path, flags, *args, **kwargs)

    def forbidden(name):
        def refuse(*args, **kwargs):
            raise PermissionError(f"sandbox: {name} is disabled")
        return refuse

    def confined(name, function, path_args):
        # Deleting or renaming the program's own scratch files is fine (tempfile does it).
        def guarded(*args, **kwargs):
            dir_fds = (kwargs.get("src_dir_fd", kwargs.get("dir_fd")), kwargs.get("dst_dir_fd", kwargs.get("dir_fd")))
            paths = args[:path_args]
            if not all(isinstance(p, (str, bytes, os.PathLike)) and inside(p, fd) for p, fd in zip(paths, dir_fds)):
                raise PermissionError(f"sandbox: os.{name} outside the working directory")
            return function(*args, **kwargs)
        return guarded

    builtins.open = io.open = _io.open = guarded_open
    io.FileIO = _io.FileIO = GuardedFileIO
    os.open = posix.open = guarded_os_open
    # os re-exports posix's functions; both names must be replaced, or `import posix` walks around.
    for name, path_args in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1), ("truncate", 1),
                            ("chmod", 1), ("utime", 1), ("rename", 2), ("replace", 2)):
        guarded = confined(name, getattr(posix, name), path_args)
        setattr(os, name, guarded)
        setattr(posix, name, guarded)
    for name in ("kill", "killpg", "fork", "forkpty", "vfork", "system", "popen", "execv", "execve",
                 "execvp", "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve",
                 "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp",
                 "removedirs", "renames", "ftruncate",
                 "fchmod", "lchmod", "chown", "fchown", "lchown", "chflags", "lchflags", "setuid",
                 "seteuid", "setreuid", "setresuid", "setgid", "setegid", "setregid", "setresgid",
                 "setsid", "setpgid", "setpgrp", "putenv", "unsetenv", "chdir", "fchdir", "chroot",
                 "symlink", "link", "mkfifo", "mknod", "abort", "register_at_fork", "pidfd_open"):
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, forbidden(f"os.{name}"))
    import shutil, signal, socket, subprocess
    # shutil.rmtree/move/copy stay usable inside the directory: they reach the disk through the
    # confined os functions and guarded open above, which refuse anything outside it.
    shutil.chown = forbidden("shutil.chown")
    for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
        setattr(subprocess, name, forbidden(f"subprocess.{name}"))
    for name in ("pthread_kill", "raise_signal", "pidfd_send_signal"):
        if hasattr(signal, name):
            setattr(signal, name, forbidden(f"signal.{name}"))
    if no_network:
        import _socket
        for module in (socket, _socket):
            for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server"):
                if hasattr(module, name):
                    setattr(module, name, forbidden(f"socket.{name}"))
    for name in ("ctypes", "_ctypes", "cffi", "_posixsubprocess", "resource", "psutil", "pty"):
        sys.modules[name] = None
    # The program gets a clean __main__, so `import __main__` finds its own globals, not ours.
    program = types.ModuleType("__main__")
    program.__builtins__ = builtins
    sys.modules["__main__"] = program
    try:
        exec(compile(source, "program.py", "exec"), program.__dict__)
        sys.stdout.flush()
    except BaseException as err:
        # A file of its own, since stderr may be the very thing that hit its size limit.
        try:
            with original_open("failure.txt", "w") as f:
                f.write(f"{type(err).__name__}: {str(err)[:300]}".rstrip(": ").splitlines()[0])
        except BaseException:
            pass
        exit_now(1)
    write(1, ("\n" + nonce + "\n").encode())
    exit_now(0)

main()
'''

# Both namespaces, then network only; tried in order, the first that works on this machine wins.
ISOLATIONS = (("unshare", "-rnp", "--fork", "--kill-child"), ("unshare", "-rn"))
SIGNAL_REASONS = {signal.SIGXFSZ: "output over the limit", signal.SIGXCPU: "CPU time over the limit",
                  signal.SIGKILL: "killed", signal.SIGSEGV: "crashed (segmentation fault)"}


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    status: str  # "passed" | "failed: <reason>" | "timed out"


@lru_cache(maxsize=1)
def isolation_prefix() -> tuple[str, ...]:
    """The ``unshare`` command that isolates a child here, or () where none works."""
    if shutil.which("unshare") is None:
        return ()
    for prefix in ISOLATIONS:
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.SubprocessError):
            continue
    return ()


def run_program(source: str, timeout: float = 3.0, memory_mb: int = 1024, output_bytes: int = 1_000_000,
                max_processes: int = 256) -> ExecResult:
    """Run one program; passed means it ran to its end without raising, within the limits.

    ``timeout`` is wall-clock seconds for the whole child (interpreter start included).
    ``max_processes`` (RLIMIT_NPROC, threads included) counts only the child's own namespace
    where namespaces work, but all of the user's processes where they do not; root is exempt.
    """
    nonce = secrets.token_hex(16)
    prefix = isolation_prefix()
    limits = [math.ceil(timeout) + 1, memory_mb * 2**20, output_bytes, max_processes, int(not prefix)]
    with tempfile.TemporaryDirectory(prefix="boe_sandbox_", ignore_cleanup_errors=True) as workdir:
        Path(workdir, "program.py").write_text(source)
        Path(workdir, "boot.py").write_text(BOOTSTRAP)
        command = [*prefix, sys.executable, "-I", "boot.py", *map(str, limits)]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir, "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8",
               "TMPDIR": workdir}
        stdout_path, stderr_path = Path(workdir, "stdout"), Path(workdir, "stderr")
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            try:
                proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=out,
                                        stderr=err, start_new_session=True)
            except OSError as error:
                return ExecResult(False, f"failed: could not start: {error}")
            try:
                proc.communicate((nonce + "\n").encode(), timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
        if timed_out:
            return ExecResult(False, "timed out")
        stdout_tail = _tail(stdout_path, 4096)
        failure = Path(workdir, "failure.txt")
        message = _tail(failure, 400) if failure.is_file() else _tail(stderr_path, 400)
        message = message.decode(errors="replace").strip()
    if proc.returncode == 0 and stdout_tail.rstrip().endswith(nonce.encode()):
        return ExecResult(True, "passed")
    return ExecResult(False, f"failed: {_reason(proc.returncode, message)}")


def _tail(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read()


def _reason(returncode: int, message: str) -> str:
    # unshare re-raises its child's fatal signal on itself, so negative codes reach us unchanged.
    if returncode < 0:
        sig = signal.Signals(-returncode)
        return SIGNAL_REASONS.get(sig, f"killed by {sig.name}")
    if message:
        return message.splitlines()[-1][:300]
    return f"exit code {returncode}" if returncode else "exited before the end of the program"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_programs(sources: list[str], workers: int = 4, **limits) -> list[ExecResult]:
    """Many programs at once, results in input order; one crash or hang stalls nothing."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda source: run_program(source, **limits), sources))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass (Chen et al., 2021):
    1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1 - k / i
    return 1.0 - prob_all_fail
