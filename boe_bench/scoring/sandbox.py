"""Running model-written programs without trusting them.

Each program runs as lm-eval's ``code_eval`` runs it: ``exec(program, {})``, so ``__name__``
is ``'builtins'`` and ``if __name__ == '__main__':`` blocks are skipped, any exception
(``SystemExit`` included) is a failure, and reading stdin fails. Around it stand two walls.

The kernel wall, where ``unshare`` works (probed once per process): the child gets new
mount, PID, network and IPC namespaces. Inside, every mount is made read-only, ``/tmp`` is a
fresh size-limited tmpfs that is the program's working directory (and ``$TMPDIR``), ``/run``,
``/var/tmp`` and ``/dev/shm`` (where host sockets live) are covered by empty tmpfs mounts,
``/proc`` shows only the sandbox's own processes and the network is empty. Then the child
drops its privileges: started by root it becomes a fresh unprivileged uid (so RLIMIT_NPROC,
which never binds root, caps its processes and threads, and host files are judged by their
"other" permission bits; directories that hide the interpreter, such as a 0700 ``/root``,
are covered by a tmpfs holding only the interpreter's own directories); started by a user
it enters a nested user namespace, which takes away its capabilities over the mounts.

The in-process guard, always: an audit hook (``sys.addaudithook``; Python offers no way to
remove one) refuses writes, deletes, renames and chmods outside the working directory,
process creation, signals, sockets that connect or bind, ctypes, sqlite extensions, rlimit
changes, new audit hooks, tracing and heap walks. The hook sees the C-level events, so
reaching the original ``FileIO`` class or rebuilding the ``posix`` module does not get
around it. It cannot see everything (``_posixsubprocess`` or SQL ``ATTACH`` reach the disk
and processes without an event), which is why the kernel wall matters; without namespaces
the guard alone stands, as it does in lm-eval, and a timeout kills the child's process group.

A program passes only by running to its end: the harness's code after ``exec`` raises an
audit event, and the hook, on seeing it come from that very frame, writes a nonce it holds
in its closure to a report channel the parent reads. The nonce never sits in a frame the
program can reach: the hook calls only C functions it captured before the program started,
on values whose exact type it checked, so no program code runs while the hook is on the
stack, and it refuses ``gc`` walks, tracing and reads of ``/proc/*/mem``. Printing the
nonce, exiting early with status 0 or raising the event early is therefore a failure.
Builtins the solution replaced are restored before the tests run (``run_program(tests=)``).

These are guards against accidents and careless code; the README says what holds where.
"""
from __future__ import annotations

import json
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

# Covered by empty tmpfs mounts inside the namespaces: where host sockets and shared scratch live.
HIDDEN = ("/run", "/var/tmp", "/dev/shm")
# Runs as the child's main script (``python -I -c``). setup() isolates, limits and installs
# the guard; run() executes the program with lm-eval's globals and then raises the marker.
BOOTSTRAP = r'''
import json, os, posix, resource, sys

MS_BIND, MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 0x1000, 0x4000, 0x40000, 0x2, 0x4
MOUNT_ATTR_RDONLY, AT_RECURSIVE, SYS_MOUNT_SETATTR, CLONE_NEWUSER = 0x1, 0x8000, 442, 0x10000000
HIDDEN = %r


def isolate(args):
    """Inside fresh namespaces: read-only mounts, a tmpfs work dir, then no privileges."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(result, what):
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def mount(source, target, fstype, flags, data=None):
        enc = lambda s: None if s is None else s.encode()
        check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")

    class MountAttr(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]

    def readonly(path, value, recursive):
        attr = MountAttr(MOUNT_ATTR_RDONLY if value else 0, 0 if value else MOUNT_ATTR_RDONLY, 0, 0)
        check(libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(-100), path.encode(),
                           ctypes.c_uint(AT_RECURSIVE if recursive else 0), ctypes.byref(attr),
                           ctypes.c_size_t(ctypes.sizeof(attr))), f"mount_setattr {path}")

    uid = args["uid"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # The interpreter's own directories must stay reachable once the tmpfs mounts cover
    # /tmp etc. and once a foreign uid cannot traverse e.g. a 0700 /root.
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                            *sys.path) if p and os.path.isdir(p)}
    needed = {p for p in needed if not any(p != q and p.startswith(q + "/") for q in needed)}
    covered = {d: "mode=0755,size=64k" for d in HIDDEN if os.path.isdir(d) and not os.path.islink(d)}
    if uid is not None:
        for path in needed:
            parts = path.split("/")
            for i in range(2, len(parts)):
                ancestor = "/".join(parts[:i])
                if not os.stat(ancestor).st_mode & 0o001:
                    covered.setdefault(ancestor, "mode=0755,size=64k")
                    break
    owner = 0 if uid is None else uid
    covered["/tmp"] = f"mode=0700,uid={owner},gid={owner},size={args['tmpfs_mb']}m"
    for top in sorted(covered, key=len):
        if any(top.startswith(other + "/") for other in covered if other != top):
            continue
        inner = [p for p in needed if p == top or p.startswith(top + "/")]
        fds = {p: os.open(p, os.O_PATH) for p in inner}
        mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, covered[top])
        for path, fd in fds.items():
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            os.close(fd)
    readonly("/", True, recursive=True)
    readonly("/tmp", False, recursive=False)
    os.chdir("/tmp")
    if uid is not None:  # started by root: become a fresh unprivileged uid
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    else:  # started by a user: a nested user namespace holds no capability over our mounts
        readonly("/proc", False, recursive=False)
        check(libc.unshare(CLONE_NEWUSER), "unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", "1000 0 1"), ("gid_map", "1000 0 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    for name in ("ctypes", "_ctypes", "ctypes._endian"):
        sys.modules.pop(name, None)


def install_guard(nonce, home, wrapper, report):
    """The audit hook. Everything it calls is captured here, before the program can patch it."""
    import _stat, _thread
    from types import SimpleNamespace

    write, exit_now, lstat, readlink, getcwd = posix.write, posix._exit, posix.lstat, posix.readlink, posix.getcwd
    getframe, get_ident, is_link = sys._getframe, _thread.get_ident, _stat.S_ISLNK
    Denied, OSError_, str_, bytes_, int_ = PermissionError, OSError, str, bytes, int
    marker = ("\n" + nonce + "\n").encode()
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    busy = set()
    refused = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
               "subprocess.Popen", "os.startfile", "os.unshare", "os.setns", "os.link", "os.symlink", "os.chown",
               "os.lchown", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "os.mknod", "os.mkfifo",
               "sys.addaudithook", "sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions",
               "gc.get_objects", "gc.get_referrers", "gc.get_referents", "socket.connect", "socket.bind",
               "socket.sendto", "socket.sendmsg", "sqlite3.enable_load_extension", "sqlite3.load_extension",
               "resource.setrlimit", "resource.prlimit", "pty.spawn", "os.add_dll_directory", "cpython.remote_debugger_script"}
    # event -> (index of each path argument, index of its dir_fd argument or None)
    paths = {"os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.chmod": ((0, 2),),
             "os.utime": ((0, 3),), "os.truncate": ((0, None),), "os.chdir": ((0, None),),
             "os.rename": ((0, 2), (1, 3))}

    def resolve(path, dir_fd):
        """The real absolute path, symlinks followed, from C calls only (a realpath)."""
        if type(path) is bytes_:
            path = path.decode("utf-8", "surrogateescape")
        if type(path) is not str_:
            return None
        if not path.startswith("/"):
            if dir_fd is None or (type(dir_fd) is int_ and dir_fd < 0):  # -1/-100: no dir_fd
                base = getcwd()
            elif type(dir_fd) is int_ and dir_fd >= 0:
                base = readlink("/proc/self/fd/" + int_.__repr__(dir_fd))
            else:
                return None
            path = base + "/" + path
        parts, pending, hops = [], path.split("/")[::-1], 0
        while pending:
            part = pending.pop()
            if part == "" or part == ".":
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            candidate = "/" + "/".join(parts + [part])
            try:
                mode = lstat(candidate).st_mode
            except OSError_:
                parts.append(part)
                continue
            if is_link(mode):
                hops += 1
                if hops > 40:
                    return None
                target = readlink(candidate)
                if target.startswith("/"):
                    parts = []
                pending.extend(target.split("/")[::-1])
            else:
                parts.append(part)
        return "/" + "/".join(parts)

    def inside(path, dir_fd=None):
        real = resolve(path, dir_fd)
        return real is not None and (real == home or real.startswith(home + "/"))

    def judge(event, args):
        if event == "boe.sandbox.done":
            # Only the harness's frame after exec() returned may end the run as a pass.
            if getframe(2) is wrapper:
                write(report, marker)
                exit_now(0)
            raise Denied("sandbox: end-of-program marker raised by the program")
        if event in refused or event.startswith("ctypes."):
            raise Denied(f"sandbox: {event} is disabled")
        if event == "open":
            path, mode, flags = args
            if type(path) is int_:
                return
            writing = type(flags) is int_ and flags & write_flags
            if type(mode) is str_:
                for letter in "wax+":
                    if letter in mode:
                        writing = True
            real = resolve(path, None)
            if real is None:
                raise Denied("sandbox: open() of an unusual path")
            if real.startswith("/proc/") and (real.endswith("/mem") or "/map_files" in real or writing):
                raise Denied(f"sandbox: {real} is off limits")
            if writing and not inside(real):
                raise Denied(f"sandbox: writing outside the working directory: {real}")
            return
        if event == "sqlite3.connect":
            database = args[0]
            if not (database == ":memory:" or database == b":memory:" or database == "" or inside(database)):
                raise Denied("sandbox: sqlite3 database outside the working directory")
            return
        for index, fd_index in paths.get(event, ()):
            dir_fd = args[fd_index] if fd_index is not None and fd_index < len(args) else None
            path = args[index]
            if type(path) is int_ and event == "os.truncate":
                continue  # ftruncate needs a file opened for writing, which open() judged
            if not inside(path, dir_fd):
                raise Denied(f"sandbox: {event} outside the working directory")
            if event == "os.rmdir" and resolve(path, dir_fd) == home:
                raise Denied("sandbox: removing the working directory")

    def hook(event, args):
        me = get_ident()
        if me in busy:
            # Raised by our own C calls (getframe): allowed. Anything else would be program
            # code running inside the hook, where a frame walk would find the nonce.
            if event == "sys._getframe":
                return
            raise Denied("sandbox: re-entered")
        if event == "sys._getframe" or event == "object.__getattr__" or event == "open" or event.startswith(
                ("os.", "sys.", "gc.", "ctypes.", "socket.", "subprocess.", "sqlite3.", "resource.", "boe.", "pty.", "cpython.")):
            busy.add(me)
            try:
                judge(event, args)
            finally:
                busy.discard(me)

    sys.addaudithook(hook)


def setup(args):
    data = b""
    while True:
        chunk = posix.read(0, 1 << 16)
        if not chunk:
            break
        data += chunk
    nonce, _, rest = data.decode().partition("\n")
    del data
    parts = json.loads(rest)
    if args["isolate"]:
        isolate(args)
    for limit, value in ((resource.RLIMIT_CPU, args["cpu_s"]), (resource.RLIMIT_AS, args["memory_bytes"]),
                         (resource.RLIMIT_FSIZE, args["output_bytes"]), (resource.RLIMIT_NPROC, args["processes"]),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    install_guard(nonce, os.path.realpath(os.getcwd()), sys._getframe(1), args["report_fd"])
    return parts


def run():
    args = json.loads(sys.argv[1])
    write, exit_now, audit, report = posix.write, posix._exit, sys.audit, args["report_fd"]
    try:
        solution, tests = setup(args)
    except BaseException as err:
        write(report, f"sandbox setup failed: {type(err).__name__}: {err}".encode(errors="replace"))
        exit_now(3)
    sys.modules["__main__"] = type(sys)("__main__")
    import builtins
    # Immutable, so a program that finds this frame cannot edit what gets restored.
    caught, run_code, build = BaseException, exec, compile
    originals, namespace = tuple(builtins.__dict__.items()), {}
    try:
        # lm-eval's code_eval runs exec(solution + tests, {}). The tests run in the same
        # globals, but with any builtin the solution replaced put back first, so a solution
        # cannot pass by patching abs, isinstance or print to please the asserts.
        run_code(build(solution, "program.py", "exec"), namespace)
        if tests is not None:
            for name, value in originals:
                if builtins.__dict__.get(name) is not value:
                    builtins.__dict__[name] = value
            run_code(build(tests, "tests.py", "exec"), namespace)
    except caught as err:
        try:
            first = f"{type(err).__name__}: {str(err)[:300]}".rstrip(": ").splitlines()[0]
            write(report, first.encode(errors="replace"))
        except BaseException:
            pass
        exit_now(1)
    audit("boe.sandbox.done")
    exit_now(1)


run()
''' % (HIDDEN,)

SIGNAL_REASONS = {signal.SIGXFSZ: "output over the limit", signal.SIGXCPU: "CPU time over the limit",
                  signal.SIGKILL: "killed", signal.SIGSEGV: "crashed (segmentation fault)"}
# Root need not map ids (it simply changes uid after the mounts); a user maps itself to root.
NAMESPACES = ("unshare", "--mount", "--pid", "--net", "--ipc", "--fork", "--kill-child", "--mount-proc")
PROBE = "import json, logging, random, subprocess, tempfile, threading\nopen('probe.txt', 'w').write('ok')\n"


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    status: str  # "passed" | "failed: <reason>" | "timed out"


@lru_cache(maxsize=1)
def isolation_prefix() -> tuple[str, ...]:
    """The ``unshare`` command that isolates a child here, or () where none works.

    Probed once with a real program through the whole bootstrap, so a machine that lets
    ``unshare`` start but refuses a mount, or hides the interpreter from a foreign uid,
    falls back to the guard alone instead of failing every program."""
    if shutil.which("unshare") is None:
        return ()
    prefix = NAMESPACES if os.geteuid() == 0 else (*NAMESPACES[:1], "--map-root-user", *NAMESPACES[1:])
    try:
        if _run(PROBE, prefix, timeout=20.0).passed:
            return prefix
    except OSError:
        pass
    return ()


def isolation() -> str:
    """In words, for reports and the self-check: which walls stand on this machine."""
    if not isolation_prefix():
        return "in-process guard only (no usable namespaces)"
    who = "as a fresh unprivileged uid" if os.geteuid() == 0 else "in a nested user namespace"
    return f"namespaces (mount, pid, net, ipc; read-only /, tmpfs work dir; runs {who}) + in-process guard"


def run_program(source: str, timeout: float = 3.0, memory_mb: int = 1024, output_bytes: int = 1_000_000,
                max_processes: int = 256, tests: str | None = None) -> ExecResult:
    """Run one program; passed means it ran to its end without raising, within the limits.

    ``tests``, when given, runs after ``source`` in the same globals (as if appended, which
    is what lm-eval runs) but with the builtins ``source`` replaced restored first.

    ``timeout`` is wall-clock seconds for the whole child (interpreter start included).
    ``max_processes`` (RLIMIT_NPROC, threads included) binds the child's own uid where
    namespaces work; without them it counts all of the user's processes, and root is exempt.
    """
    return _run(source, isolation_prefix(), timeout, memory_mb, output_bytes, max_processes, tests)


def _run(source: str, prefix: tuple[str, ...], timeout: float, memory_mb: int = 1024,
         output_bytes: int = 1_000_000, max_processes: int = 256, tests: str | None = None) -> ExecResult:
    nonce = secrets.token_hex(16)
    isolate = bool(prefix)
    # A uid no account uses, fresh per program, so RLIMIT_NPROC counts this program alone.
    uid = 2_000_000_000 + secrets.randbelow(100_000_000) if isolate and os.geteuid() == 0 else None
    # The report channel and output files are anonymous: nothing the program does to its
    # directory (deleting it included) can take them from the parent.
    with tempfile.TemporaryDirectory(prefix="boe_sandbox_", ignore_cleanup_errors=True) as workdir, \
            tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as report:
        args = {"isolate": isolate, "uid": uid, "cpu_s": math.ceil(timeout) + 1, "memory_bytes": memory_mb * 2**20,
                "output_bytes": output_bytes, "processes": max_processes, "report_fd": report.fileno(),
                "tmpfs_mb": max(16, 4 * output_bytes // 2**20)}
        home = "/tmp" if isolate else workdir
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "TMPDIR": home, "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}
        command = [*prefix, sys.executable, "-I", "-c", BOOTSTRAP, json.dumps(args)]
        try:
            proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                    pass_fds=(report.fileno(),), start_new_session=True)
        except OSError as error:
            return ExecResult(False, f"failed: could not start: {error}")
        try:
            proc.communicate((nonce + "\n" + json.dumps([source, tests])).encode(), timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc)
        if timed_out:
            return ExecResult(False, "timed out")
        said = _tail(report, 4096)
        message = (said if said.strip() else _tail(err, 400)).decode(errors="replace").strip()
    if proc.returncode == 0 and said.endswith(("\n" + nonce + "\n").encode()):
        return ExecResult(True, "passed")
    return ExecResult(False, f"failed: {_reason(proc.returncode, message.replace(nonce, '<nonce>'))}")


def _tail(file, size: int) -> bytes:
    file.seek(0, os.SEEK_END)
    file.seek(max(0, file.tell() - size))
    return file.read()


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


def run_programs(sources: list[str], workers: int = 4, tests: list[str | None] | None = None,
                 **limits) -> list[ExecResult]:
    """Many programs at once, results in input order; one crash or hang stalls nothing."""
    tests = tests or [None] * len(sources)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda pair: run_program(pair[0], tests=pair[1], **limits), zip(sources, tests)))


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
