"""Running model-written programs without trusting them.

Each program runs as lm-eval's ``code_eval`` (HF evaluate) runs it, rewritten here as our own
rule: ``exec(solution + tests, {})`` (so ``__name__`` is ``'builtins'`` and ``if __name__ ==
'__main__':`` blocks are skipped) in a fresh working directory, after the functions its
reliability guard sets to None are set to None (``os.getcwd``, ``os.chdir``, ``os.remove``,
``os.putenv``, ``shutil.rmtree``, ``subprocess.Popen``, ``exit``, ``quit``, ``help``, ...; so
``tempfile.TemporaryDirectory()`` fails at cleanup, as there) and the modules it poisons are
unimportable; stdin, stdout and stderr are one write-only stream whose reads raise ``OSError``
(so ``input()`` and ``sys.stdin.read()`` fail) and whose writes are swallowed (no output
limit); a SIGALRM after ``timeout`` seconds of the program raises, and any exception
(``SystemExit`` included) is a failure. Around it stand three walls.

**Namespaces**, where ``unshare`` works (probed once per process; ``BOE_SANDBOX_NO_NAMESPACES=1``
forces them off): new mount, PID, network and IPC namespaces; every mount read-only, ``/tmp`` a
fresh size-limited tmpfs that is the working directory, ``/run``, ``/var/tmp`` and ``/dev/shm``
covered, ``/proc`` showing the sandbox's processes only; root drops to a fresh unprivileged uid
(so RLIMIT_NPROC binds), a user enters a nested user namespace.

**Landlock and seccomp**, raised by the child on itself before the program runs: they need no
privilege and work inside containers where ``unshare`` is refused. Landlock (ABI probed at run
time; 1 or newer) lets the program write only under its working directory and read only the
interpreter, its packages and the system libraries, less this project's checkout and shipped
data (so the reference solutions are unreadable); from ABI 4 TCP bind/connect is refused, from
ABI 6 signals and abstract unix sockets outside the sandbox; as a Landlock domain it cannot
ptrace (so ``/proc/<pid>/mem``) anything outside. seccomp refuses new processes (``clone``
without ``CLONE_THREAD``, ``fork``, ``execve``; threads still work), signals to any other
process, ``ptrace``, ``pidfd_*``, ``process_vm_*``, ``setpriority``/scheduler changes, limit
changes, flag-setting ``ioctl`` (``FS_IOC_SETFLAGS``, ``FS_IOC_FSSETXATTR``, ``TIOCSTI``),
sockets, mounts, ``io_uring`` and new signal handlers. With no second process the address-space
limit (``memory_mb``) bounds the whole program's memory. ``BOE_SANDBOX_NO_KERNEL_WALLS=1``
turns both off (for measuring the guard alone).

Bindings: the package index offers ``landlock`` (1.0.0.dev5, a development release) and
``pyseccomp`` (0.1.2, unchanged since 2021, itself ctypes over libseccomp); libseccomp's own
binding is not on the index. Neither is a sound dependency, so both walls are ``ctypes`` here:
Landlock is three system calls (444-446, the same on every architecture), and seccomp goes
through the system's ``libseccomp.so.2`` (found with ``ctypes.util.find_library``), which
resolves system-call numbers for the running architecture. Where either is missing, that wall
is reported down (``isolation()``, the self-check and the score CLI say which walls stand).

**The in-process guard**, always: an audit hook (``sys.addaudithook``; Python offers no way to
remove one) refuses writes, deletes, renames and chmods outside the working directory (sqlite
URIs included), more than 32 files opened for writing, process creation, signals, sockets that
connect or bind, ctypes, sqlite extensions, rlimit changes, new audit hooks, tracing and heap
walks. It sees C-level events, so the original ``FileIO`` class or a rebuilt ``posix`` module
do not get around it; what it cannot see (a ``dir_fd`` given to ``open``, ``_posixsubprocess``,
SQL ``ATTACH``) the kernel walls stop.

A program passes only by running to its end. The harness's frame raises an audit event on the
line after the tests; the hook writes a nonce to a report channel the parent reads only when
that event names the harness's own frame *standing on that line* (``f_lineno``, which a program
cannot move), so a program-controlled callable the harness happens to call elsewhere (an
exception's ``__str__``, a ``__del__``, a metaclass property) cannot raise it. The nonce and the
tests are constants of the hook's code, compiled with its lines moved past 50,000,000: reading a
guard frame's ``f_code``, a guard traceback entry's ``tb_frame`` or a guard function's
``__code__`` is refused, and the hook calls only C functions on values of checked exact types
with the collector off, so no program code runs while it is on the stack. The tests reach the
harness only after the solution has finished and no thread of it still runs, and go straight to
``compile``; while they run, frames and code objects cannot be obtained (``sys._getframe``,
``tb_frame``, ``gi_frame``, ``f_code``, ``__code__``), so the program cannot read the asserts.

``strict=True`` (``task.strict=true``) also runs the tests with pristine builtins and modules
(every module attribute put back, modules the program loaded dropped, a private copy of the
builtins), in a fresh namespace holding the task's own context (HumanEval's prompt) and the
entry points only, whose return values must not be of a class the program defined to compare
equal. The default keeps lm-eval's verdicts
where lm-eval's own semantics make a pass (the README lists which).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import math
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Covered by empty tmpfs mounts inside the namespaces: where host sockets and shared scratch live.
HIDDEN = ("/run", "/var/tmp", "/dev/shm")
NO_NAMESPACES, NO_KERNEL_WALLS = "BOE_SANDBOX_NO_NAMESPACES", "BOE_SANDBOX_NO_KERNEL_WALLS"
WORK_ROOT: str | None = None  # where work directories are made (None: the system's temporary directory)
MAX_WRITES = 32  # files a program may open for writing: with RLIMIT_FSIZE, what it can leave on the disk
# Runs as the child's main script (``python -I -c``); see the module docstring.
BOOTSTRAP = r'''
import json, os, posix, resource, sys

HIDDEN = @HIDDEN@
GUARD_BASE, TESTS_BASE = 50_000_000, 20_000_000
MS_BIND, MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 0x1000, 0x4000, 0x40000, 0x2, 0x4
MOUNT_ATTR_RDONLY, AT_RECURSIVE, SYS_MOUNT_SETATTR, CLONE_NEWUSER = 0x1, 0x8000, 442, 0x10000000
# lm-eval's code_eval (HF evaluate, execute.py: reliability_guard) sets these to None before exec.
DISABLED = {"os": ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
                   "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
                   "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"),
            "shutil": ("rmtree", "move", "chown"), "subprocess": ("Popen",), "builtins": ("exit", "quit", "help")}
UNIMPORTABLE = ("ipdb", "joblib", "resource", "psutil", "tkinter")
# Modules lm-eval has imported when code_eval forks (a fresh import would trip the guard, as
# numpy's calls os.putenv): imported first when the solution names them.
PRELOADED = ("numpy", "pandas")


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
    needed = interpreter_dirs()
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


def interpreter_dirs():
    """The interpreter's own directories (prefixes and sys.path), outermost only."""
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                            *sys.path) if p and os.path.isdir(p)}
    return {p for p in needed if not any(p != q and p.startswith(q + "/") for q in needed)}


def readable(forbidden):
    """What the program may read: the interpreter, its packages and the system libraries,
    less every forbidden path (the project's checkout and its shipped data): a directory
    holding one is replaced by its other entries, recursively."""
    roots = interpreter_dirs() | {p for p in ("/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", "/etc/localtime")
                                  if os.path.exists(p)}
    bad = {os.path.realpath(f) for f in forbidden}

    def under(path, top):
        return path == top or path.startswith(top.rstrip("/") + "/")

    def carve(root):
        real = os.path.realpath(root)
        if any(under(real, f) for f in bad):
            return
        if not any(under(f, real) for f in bad):
            yield real
            return
        try:
            names = os.listdir(real)
        except OSError:
            return
        for name in names:
            yield from carve(real + "/" + name)

    for root in sorted(roots):
        yield from carve(root)


def kernel_walls(args, home):
    """Landlock (files and TCP) and seccomp (processes, signals, ...): raised by this process
    on itself, unprivileged, where namespaces exist or not. Returns their names."""
    import ctypes
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    up = []
    if args["landlock"]:
        abi = libc.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint(1))
        if abi < 1:
            raise OSError(ctypes.get_errno(), "Landlock is not available")
        fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
        raw = struct.pack("<QQQ", fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)[:8 if abi < 4 else 16 if abi < 6 else 24]
        attr = ctypes.create_string_buffer(raw, len(raw))
        ruleset = libc.syscall(ctypes.c_long(444), attr, ctypes.c_size_t(len(raw)), ctypes.c_uint(0))
        if ruleset < 0:
            raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
        file_rights = 1 | 2 | 4 | (1 << 14) | (1 << 15)

        def allow(path, rights):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                return
            try:
                if not os.path.isdir(path):
                    rights &= file_rights
                rule = ctypes.create_string_buffer(struct.pack("<Qi", rights & fs, fd), 12)
                if libc.syscall(ctypes.c_long(445), ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint(0)):
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
            finally:
                os.close(fd)

        for path in readable(args["forbidden"]):
            allow(path, 1 | 4 | 8)  # execute, read files, list directories
        allow(home, fs)
        allow("/dev/null", 2 | 4)
        for device in ("/dev/urandom", "/dev/random", "/dev/zero"):
            allow(device, 4)
        if libc.prctl(38, 1, 0, 0, 0):  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(ctypes.c_long(446), ctypes.c_int(ruleset), ctypes.c_uint(0)):
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
        os.close(ruleset)
        up.append(f"landlock ABI {abi}")
    if args["seccomp"]:
        lib = ctypes.CDLL(args["seccomp"], use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]

        class Cmp(ctypes.Structure):
            _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

        ctx = lib.seccomp_init(0x7FFF0000)  # allow by default; what follows is refused
        if not ctx:
            raise OSError("seccomp_init failed")
        me = os.getpid()

        def refuse(names, errno=1, *cmps):
            for name in names.split():
                number = lib.seccomp_syscall_resolve_name(name.encode())
                if number < 0:
                    continue
                array = (Cmp * len(cmps))(*cmps) if cmps else None
                rc = lib.seccomp_rule_add_array(ctypes.c_void_p(ctx), ctypes.c_uint32(0x00050000 | errno),
                                                ctypes.c_int(number), ctypes.c_uint(len(cmps)), array)
                if rc < 0:
                    raise OSError(-rc, f"seccomp rule for {name}")

        refuse("fork vfork execve execveat ptrace process_vm_readv process_vm_writev process_madvise kcmp "
               "pidfd_open pidfd_send_signal pidfd_getfd tkill setpriority ioprio_set sched_setscheduler "
               "sched_setparam sched_setattr sched_setaffinity setrlimit mount umount2 pivot_root chroot unshare setns "
               "bpf perf_event_open userfaultfd keyctl add_key request_key kexec_load kexec_file_load init_module "
               "finit_module delete_module reboot swapon swapoff acct quotactl io_uring_setup io_uring_enter "
               "io_uring_register open_tree move_mount fsopen fsmount fsconfig fspick mount_setattr name_to_handle_at "
               "open_by_handle_at settimeofday clock_settime clock_adjtime adjtimex sethostname setdomainname chown "
               "fchown lchown fchownat mknod mknodat setuid setgid setreuid setregid setresuid setresgid setgroups "
               "capset")
        refuse("socket connect bind", 13)
        refuse("clone3", 38)  # ENOSYS: the C library falls back to clone, whose flags are checked
        refuse("clone", 1, Cmp(0, 7, 0x10000, 0))  # a new process, not a thread (CLONE_THREAD unset)
        refuse("kill tgkill rt_sigqueueinfo rt_tgsigqueueinfo", 1, Cmp(0, 1, me, 0))  # only to itself
        refuse("prlimit64", 1, Cmp(2, 1, 0, 0))  # setting a limit
        refuse("rt_sigaction", 1, Cmp(1, 1, 0, 0))  # installing a handler (the harness's are in place)
        for request in (0x40086602, 0x40046602, 0x401C5820, 0x5412, 0x541C):  # SETFLAGS (64/32), FSSETXATTR, TIOCSTI, TIOCLINUX
            refuse("ioctl", 1, Cmp(1, 7, 0xFFFFFFFF, request))
        if lib.seccomp_load(ctypes.c_void_p(ctx)):
            raise OSError("seccomp_load failed")
        lib.seccomp_release(ctypes.c_void_p(ctx))
        up.append("seccomp")
    return up


# The audit hook, compiled with its lines moved past GUARD_BASE so that a traceback entry or
# frame of it is recognised by its line number alone. The pass marker and the tests are
# constants of its code, which nothing outside the hook may read (``__code__``/``f_code`` of
# guard code are refused), so no frame, closure or global the program can reach holds them.
GUARD = r"""
def make(home, wrapper, report, done_line, tests_line, max_writes, write, exit_now, lstat, readlink, getcwd, get_ident,
         is_link, gc_isenabled, gc_disable, gc_enable, FrameType, TracebackType, FunctionType, Denied, OSError_, str_,
         bytes_, int_, list_, tuple_, len_, thread_count, strict):
    busy, phase, writes, guard_code = set(), [0], [0], []
    write_flags = @WRITE_FLAGS@
    refused = @REFUSED@
    paths = @PATHS@
    frames = ("tb_frame", "gi_frame", "cr_frame", "ag_frame")
    codes = ("f_code", "__code__", "gi_code", "cr_code", "ag_code")

    def resolve(path, dir_fd):
        if type(path) is bytes_:
            path = path.decode("utf-8", "surrogateescape")
        if type(path) is not str_:
            return None
        if not path.startswith("/"):
            if dir_fd is None or (type(dir_fd) is int_ and dir_fd < 0):
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

    def count_write():
        writes[0] += 1
        if writes[0] > max_writes:
            raise Denied(f"sandbox: more than {max_writes} files opened for writing")

    def judge(event, args):
        if event == "boe.sandbox.done":
            frame = args[0] if type(args) is tuple_ and len_(args) == 1 else None
            if type(frame) is FrameType and frame is wrapper and frame.f_lineno == done_line and phase[0] == 1:
                write(report, @MARKER@)
                exit_now(0)
            raise Denied("sandbox: end-of-program marker raised by the program")
        if event == "boe.sandbox.tests":
            frame, box = args if type(args) is tuple_ and len_(args) == 2 else (None, None)
            if type(frame) is FrameType and frame is wrapper and frame.f_lineno == tests_line and phase[0] == 0 \
                    and type(box) is list_:
                if thread_count():
                    raise Denied("sandbox: threads of the program still run when the tests start")
                phase[0] = 1
                tests = @TESTS@
                if tests is not None:
                    box.append(tests)
                return
            raise Denied("sandbox: the tests are not for the program")
        if event == "object.__getattr__":
            obj, name = args
            if type(name) is not str_:
                return
            if name in frames:
                if phase[0] == 1:
                    raise Denied(f"sandbox: {name} is refused while the tests run")
                if type(obj) is TracebackType and obj.tb_lineno >= @GUARD_BASE@:
                    raise Denied("sandbox: the guard's frames are off limits")
            elif name in codes:
                if phase[0] == 1:
                    raise Denied(f"sandbox: {name} is refused while the tests run")
                if type(obj) is FrameType and obj.f_lineno >= @GUARD_BASE@:
                    raise Denied("sandbox: the guard's code is off limits")
                for own in guard_code:
                    if obj is own:
                        raise Denied("sandbox: the guard's code is off limits")
            return
        if event == "sys._getframe" or event == "sys._getframemodulename":
            if phase[0] == 1:
                raise Denied(f"sandbox: {event} is refused while the tests run")
            return
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
            if writing:
                if not inside(real):
                    raise Denied(f"sandbox: writing outside the working directory: {real}")
                count_write()
            return
        if event == "sqlite3.connect":
            database = args[0]
            if type(database) is bytes_:
                database = database.decode("utf-8", "surrogateescape")
            if type(database) is not str_:
                raise Denied("sandbox: sqlite3 database of an unusual name")
            if database.startswith("file:"):
                database = database[5:].partition("?")[0].partition("#")[0]
                if database.startswith("//"):
                    database = "/" + database[2:].partition("/")[2]
            if not (database == ":memory:" or database == "" or inside(database)):
                raise Denied("sandbox: sqlite3 database outside the working directory")
            if not database == ":memory:":
                count_write()
            return
        for index, fd_index in paths.get(event, ()):
            dir_fd = args[fd_index] if fd_index is not None and fd_index < len_(args) else None
            path = args[index]
            if type(path) is int_ and event == "os.truncate":
                continue
            if not inside(path, dir_fd):
                raise Denied(f"sandbox: {event} outside the working directory")
            if event == "os.rmdir" and resolve(path, dir_fd) == home:
                raise Denied("sandbox: removing the working directory")

    def hook(event, args):
        if type(event) is not str_:
            event = str_.__str__(event)
        me = get_ident()
        if me in busy:
            raise Denied("sandbox: re-entered")
        if event == "open" or event == "object.__getattr__" or event.startswith(
                ("os.", "sys.", "gc.", "ctypes.", "socket.", "subprocess.", "sqlite3.", "resource.", "boe.", "pty.",
                 "cpython.")):
            busy.add(me)
            collecting = gc_isenabled()
            gc_disable()
            try:
                judge(event, args)
            finally:
                busy.discard(me)
                if collecting:
                    gc_enable()

    guard_code.extend((make, hook, judge, resolve, inside, count_write))
    return hook
"""


def install_guard(home, wrapper, report, marker, tests, done_line, tests_line, max_writes, strict):
    import _stat, _thread, gc, types

    source = (GUARD.replace("@MARKER@", repr(marker)).replace("@TESTS@", repr(tests))
              .replace("@GUARD_BASE@", str(GUARD_BASE))
              .replace("@WRITE_FLAGS@", str(os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
              .replace("@REFUSED@", repr(frozenset(REFUSED))).replace("@PATHS@", repr(PATHS)))
    code = compile(source, "<guard>", "exec")
    code = shift(code, GUARD_BASE, types.CodeType)
    scope = {}
    exec(code, scope)
    hook = scope["make"](home, wrapper, report, done_line, tests_line, max_writes, posix.write, posix._exit,
                             posix.lstat, posix.readlink, posix.getcwd, _thread.get_ident, _stat.S_ISLNK, gc.isenabled,
                             gc.disable, gc.enable, types.FrameType, types.TracebackType, types.FunctionType,
                             PermissionError, OSError, str, bytes, int, list, tuple, len,
                             _thread._count, strict)
    scope.clear()
    sys.addaudithook(hook)


def shift(code, by, code_type):
    """The code object with every line moved down by ``by`` (nested code too)."""
    consts = tuple(shift(c, by, code_type) if type(c) is code_type else c for c in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + by, co_consts=consts)


REFUSED = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
           "subprocess.Popen", "os.startfile", "os.unshare", "os.setns", "os.link", "os.symlink", "os.chown",
           "os.lchown", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "os.mknod", "os.mkfifo",
           "sys.addaudithook", "sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions",
           "gc.get_objects", "gc.get_referrers", "gc.get_referents", "socket.connect", "socket.bind",
           "socket.sendto", "socket.sendmsg", "sqlite3.enable_load_extension", "sqlite3.load_extension",
           "resource.setrlimit", "resource.prlimit", "pty.spawn", "os.add_dll_directory", "cpython.remote_debugger_script",
           "sys.monitoring.register_callback", "signal.pthread_kill"}
# event -> (index of each path argument, index of its dir_fd argument or None)
PATHS = {"os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.chmod": ((0, 2),),
         "os.utime": ((0, 3),), "os.truncate": ((0, None),), "os.chdir": ((0, None),), "os.rename": ((0, 2), (1, 3))}


class Timeout(Exception):
    """What code_eval's time limit raises (its TimeoutException): the row is "timed out"."""


def lmeval_environment(timeout):
    """code_eval's process as lm-eval runs it, rewritten: the functions its reliability guard
    sets to None, the modules it makes unimportable, and a SIGALRM time limit that raises."""
    import builtins, faulthandler, shutil, signal, subprocess, tempfile  # noqa: E401 (the modules the guard edits)

    tempfile.gettempdir()  # known in lm-eval's process before the guard (code_eval made its temp dir with it)
    faulthandler.disable()
    os.environ["OMP_NUM_THREADS"] = "1"
    modules = {"os": os, "shutil": shutil, "subprocess": subprocess, "builtins": builtins}
    for module, names in DISABLED.items():
        for name in names:
            setattr(modules[module], name, None)
    for name in UNIMPORTABLE:
        sys.modules[name] = None

    def expire(signum, frame):
        raise Timeout("Timed out!")

    signal.signal(signal.SIGALRM, expire)
    return lambda: signal.setitimer(signal.ITIMER_REAL, timeout)


def swallowed_io():
    """code_eval's stdin/stdout/stderr: one write-only text stream (reads raise OSError)."""
    import io

    class WriteOnly(io.StringIO):
        def write(self, text):  # swallowed, not kept: code_eval keeps it in memory
            if not isinstance(text, str):
                raise TypeError(f"string argument expected, got '{type(text).__name__}'")
            return len(text)

        def read(self, *args, **kwargs):
            raise OSError

        readline = readlines = read

        def readable(self, *args, **kwargs):
            return False

    stream = WriteOnly()
    sys.stdin = sys.stdout = sys.stderr = stream


def snapshot():
    """Every loaded module's attributes, and the builtins, as they are now (for strict)."""
    import builtins

    modules = {name: (module, tuple(vars(module).items())) for name, module in sys.modules.items()
               if module is not None and isinstance(getattr(module, "__dict__", None), dict)}
    return {"modules": modules, "builtins": dict(builtins.__dict__)}


def setup(args):
    data = b""
    while True:
        chunk = posix.read(0, 1 << 16)
        if not chunk:
            break
        data += chunk
    nonce, _, rest = data.decode().partition("\n")
    del data
    solution, tests, context, entry = json.loads(rest)
    if not args["isolate"]:  # killed with the harness thread that started it, even by SIGKILL
        import ctypes

        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != args["parent"]:
            posix._exit(3)
    if args["isolate"]:
        isolate(args)
    home = os.path.realpath(os.getcwd())
    for limit, value in ((resource.RLIMIT_CPU, args["cpu_s"]), (resource.RLIMIT_AS, args["memory_bytes"]),
                         (resource.RLIMIT_FSIZE, args["output_bytes"]), (resource.RLIMIT_NPROC, args["processes"]),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    import gc, types  # noqa: E401 (loaded before the walls)
    for name in PRELOADED:  # loaded in lm-eval's process before code_eval forks: importable after the guard
        if name in solution:
            try:
                __import__(name)
            except Exception:
                pass
    start_timer = lmeval_environment(args["timeout"])
    walls = kernel_walls(args, home)
    for name in ("ctypes", "_ctypes", "ctypes._endian", "struct"):
        sys.modules.pop(name, None)
    wrapper = sys._getframe(1)
    install_guard(home, wrapper, args["report_fd"], ("\n" + nonce + "\n").encode(), tests,
                  args["done_line"], args["tests_line"], args["max_writes"], args["strict"])
    return solution, context, entry, start_timer, walls, tests is not None, wrapper


def checked(function, B, stdlib, Denied):
    """strict: the entry point as the tests see it. A value it returns must be built from
    plain values, not from a class the program made to please ``==`` (``B``: the pristine
    builtins, so that nothing the program patched runs here)."""
    type_, all_, issubclass_, getattr_, str_, dict_ = B["type"], B["all"], B["issubclass"], B["getattr"], B["str"], B["dict"]
    containers = (B["list"], B["tuple"], B["set"], B["frozenset"])
    plain = (type_(None), B["bool"], B["int"], B["float"], B["complex"], str_, B["bytes"], *containers, dict_)
    eq, ne = B["object"].__eq__, B["object"].__ne__

    def ok(value, depth=0):
        kind = type_(value)
        if kind in plain:
            if depth > 50:
                return False
            if kind is dict_:
                return all_(ok(k, depth + 1) and ok(v, depth + 1) for k, v in dict_.items(value))
            if kind in containers:
                return all_(ok(v, depth + 1) for v in value)
            return True
        if not kind.__flags__ & (1 << 9):
            return True  # a type written in C (numpy scalars, datetime, ...)
        module = str_.__str__(getattr_(kind, "__module__", "") or "") if type_(getattr_(kind, "__module__", "")) is str_ else ""
        if module != "builtins" and module.partition(".")[0] in stdlib:
            return True  # a class of the standard library (Fraction, Counter, ...)
        return not any(issubclass_(kind, base) for base in plain) and kind.__eq__ is eq and kind.__ne__ is ne

    def entry(*args, **kwargs):
        value = function(*args, **kwargs)
        if not ok(value):
            raise Denied("sandbox (strict): the entry point returned a value of a class the program defined "
                         f"({type_(value).__name__}), which may compare equal to anything")
        return value
    return entry


def strict_namespace(namespace, pristine, context, entry, build):
    """strict: builtins and modules put back as they were before the program, and a fresh
    namespace holding the task's own context (HumanEval's prompt) and the entry points only,
    with a private copy of the pristine builtins."""
    for name, (module, items) in pristine["modules"].items():
        now, then = vars(module), dict(items)
        for key in [k for k in now if k not in then]:
            del now[key]
        for key, value in items:
            if key not in now or now[key] is not value:
                now[key] = value
    for name in [n for n in sys.modules if n not in pristine["modules"]]:
        del sys.modules[name]
    B = pristine["builtins"]
    fresh = {"__builtins__": dict(B)}
    if context:
        exec(build(context, "context.py", "exec"), fresh)
    for name in entry or ():
        if name in namespace:
            value = namespace[name]
            fresh[name] = checked(value, B, sys.stdlib_module_names, PermissionError) if callable(value) else value
    return fresh


def report_failure(err, write, report, exit_now):
    """The failure's first line to the parent (program code may run here: the marker is out
    of reach, since only the line that raises it can)."""
    try:
        if type(err) is Timeout:
            write(report, b"timed out")
            exit_now(1)
        first = f"{type(err).__name__}: {str(err)[:300]}".rstrip(": ").splitlines()[0]
        write(report, first.encode(errors="replace"))
    except BaseException:
        write(report, b"an exception whose message could not be formatted")
    exit_now(1)


def run():
    args = json.loads(sys.argv[1])
    write, exit_now, audit, report = posix.write, posix._exit, sys.audit, args["report_fd"]
    try:
        solution, context, entry, start_timer, walls, has_tests, me = setup(args)
    except BaseException as err:
        write(report, f"sandbox setup failed: {type(err).__name__}: {err}".encode(errors="replace"))
        exit_now(3)
    if args["say_walls"]:
        write(report, ("walls: " + ", ".join(walls) + "\n").encode())
    sys.modules["__main__"] = type(sys)("__main__")
    import gc
    # Everything used after the program starts is captured here, in locals: the program can
    # read this frame (f_back) but not rebind its locals, and only C functions are called on
    # the way to the tests, which are handed over (by the hook, once no other thread runs)
    # into `box` and go straight to compile(), never into a local.
    caught, run_code, build, strict, fail = BaseException, exec, compile, args["strict"], report_failure
    prepare = strict_namespace
    gc_disable, gc_enable = gc.disable, gc.enable
    namespace, box = {}, []
    swallowed_io()
    pristine = snapshot() if strict else None
    start_timer()
    try:
        run_code(build(solution, "program.py", "exec"), namespace)
        tests_namespace = prepare(namespace, pristine, context, entry, build) if strict else namespace
        gc_disable()
        audit("boe.sandbox.tests", me, box)  # @TESTS_LINE@
        if has_tests:
            run_code(build(box.pop(), "tests.py", "exec"), gc_enable() or tests_namespace)
    except caught as err:
        fail(err, write, report, exit_now)
        exit_now(1)
    audit("boe.sandbox.done", me)  # @DONE_LINE@
    exit_now(1)


run()
'''
_LINES = BOOTSTRAP.splitlines()
TESTS_LINE = next(i for i, line in enumerate(_LINES, 1) if line.endswith("# @TESTS_LINE@"))
DONE_LINE = next(i for i, line in enumerate(_LINES, 1) if line.endswith("# @DONE_LINE@"))
BOOTSTRAP = BOOTSTRAP.replace("@HIDDEN@", repr(HIDDEN))

SIGNAL_REASONS = {signal.SIGXFSZ: "output over the limit", signal.SIGXCPU: "CPU time over the limit",
                  signal.SIGKILL: "killed", signal.SIGSEGV: "crashed (segmentation fault)",
                  signal.SIGSYS: "killed by seccomp"}
# Root need not map ids (it simply changes uid after the mounts); a user maps itself to root.
NAMESPACES = ("unshare", "--mount", "--pid", "--net", "--ipc", "--fork", "--kill-child", "--mount-proc")
PROBE = ("import json, logging, random, subprocess, tempfile, threading\nopen('probe.txt', 'w').write('ok')\n"
         "t = threading.Thread(target=int)\nt.start()\nt.join()\n")


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    status: str  # "passed" | "failed: <reason>" | "timed out"


@dataclass(frozen=True)
class Walls:
    """The walls a child gets here: the ``unshare`` prefix (() for none), whether Landlock and
    seccomp are raised, and their names as the probe reported them."""
    prefix: tuple[str, ...]
    landlock: bool
    seccomp: str | None
    names: tuple[str, ...] = ()


def _off(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() not in ("", "0", "false", "no")


@lru_cache(maxsize=1)
def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none, or refused, e.g. by a seccomp profile)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        abi = libc.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint(1))
    except (OSError, AttributeError):
        return 0
    return max(0, abi)


@lru_cache(maxsize=1)
def seccomp_library() -> str | None:
    """The system's libseccomp, or None where it is not installed."""
    for name in (ctypes.util.find_library("seccomp"), "libseccomp.so.2"):
        if name:
            try:
                ctypes.CDLL(name)
                return name
            except OSError:
                continue
    return None


def forbidden_paths() -> list[str]:
    """What no program may read: this package (its shipped data) and, for a checkout, the
    repository (tests/fixtures hold the reference solutions), less the interpreter's own
    directories where they lie inside it (CI's virtualenv is ``<checkout>/.venv``)."""
    package = Path(__file__).resolve().parents[1]
    paths = [str(package)]
    if (package.parent / "pyproject.toml").exists():
        paths.append(str(package.parent))
    import sysconfig

    where = (sys.prefix, sys.exec_prefix, *(sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib",
                                                                                     "platlib")))
    needed = {os.path.realpath(p) for p in where if p and os.path.isdir(p)}

    def split(path: str) -> list[str]:
        inner = [n for n in needed if n.startswith(path + "/")]
        if any(n == path for n in needed):
            return []
        if not inner:
            return [path]
        try:
            children = sorted(os.listdir(path))
        except OSError:
            return []
        return [p for child in children for p in split(os.path.join(path, child))]

    return sorted({p for path in paths for p in split(path)})


def sweep_stale(root: str | None = None) -> int:
    """Remove the work directories of scorers that died before cleaning up (a SIGKILL, a
    power cut): ``boe_sandbox_<pid>_*`` whose process no longer exists. Returns how many."""
    root = root or tempfile.gettempdir()
    removed = 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        pid = name[len("boe_sandbox_"):].partition("_")[0]
        if name.startswith("boe_sandbox_") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            removed += remove_tree(os.path.join(root, name))
    return removed


@lru_cache(maxsize=1)
def walls() -> Walls:
    """The walls that work here, probed once with a real program through the whole bootstrap,
    so a machine that refuses a mount, hides the interpreter from a foreign uid or lacks a
    Landlock feature falls back to fewer walls instead of failing every program."""
    sweep_stale(WORK_ROOT)
    kernel = not _off(NO_KERNEL_WALLS)
    landlock, seccomp = kernel and landlock_abi() >= 1, seccomp_library() if kernel else None
    prefixes = [()]
    if not _off(NO_NAMESPACES) and shutil.which("unshare") is not None:
        prefix = NAMESPACES if os.geteuid() == 0 else (*NAMESPACES[:1], "--map-root-user", *NAMESPACES[1:])
        prefixes.insert(0, prefix)
    for prefix in prefixes:
        for lsm in dict.fromkeys([(landlock, seccomp), (False, seccomp), (landlock, None), (False, None)]):
            candidate = Walls(prefix, *lsm)
            try:
                result, said = _run(PROBE, candidate, timeout=20.0, say_walls=True)
            except OSError:
                continue
            if result.passed:
                names = ("namespaces",) * bool(prefix) + tuple(w for w in said.split(", ") if w)
                return Walls(prefix, *lsm, names=names)
    return Walls((), False, None)


def isolation_prefix() -> tuple[str, ...]:
    """The ``unshare`` command that isolates a child here, or () where none works."""
    return walls().prefix


def isolation() -> str:
    """In words, for reports, the self-check and the score CLI: which walls stand here."""
    w = walls()
    parts = []
    if w.prefix:
        who = "as a fresh unprivileged uid" if os.geteuid() == 0 else "in a nested user namespace"
        parts.append(f"namespaces (mount, pid, net, ipc; read-only /, tmpfs work dir; runs {who})")
    else:
        parts.append("no namespaces" + (f" ({NO_NAMESPACES} set)" if _off(NO_NAMESPACES) else " (unshare refused)"))
    if _off(NO_KERNEL_WALLS):
        parts.append(f"no Landlock/seccomp ({NO_KERNEL_WALLS} set)")
    else:
        landlock = [n for n in w.names if n.startswith("landlock")]
        parts.append(landlock[0].replace("landlock", "Landlock") if landlock else
                     "no Landlock (" + ("kernel lacks it" if not landlock_abi() else "refused here") + ")")
        parts.append("seccomp" if w.seccomp else
                     "no seccomp (" + ("libseccomp not installed" if not seccomp_library() else "refused here") + ")")
    parts.append("in-process guard")
    return " + ".join(parts)


def run_program(source: str, timeout: float = 3.0, memory_mb: int = 1024, output_bytes: int = 1_000_000,
                max_processes: int = 256, tests: str | None = None, strict: bool = False, context: str | None = None,
                entry: list[str] | tuple[str, ...] | None = None) -> ExecResult:
    """Run one program; passed means it ran to its end without raising, within the limits.

    ``tests``, when given, runs after ``source`` in the same globals (as if appended, which is
    what lm-eval runs); with ``strict`` it runs in a fresh namespace holding ``context`` (run
    first) and the ``entry`` names from the solution, with pristine builtins and modules.

    ``timeout`` is code_eval's: seconds of the program (SIGALRM raises, as there); the child is
    killed 2 s later whatever it does. ``memory_mb`` bounds the address space (the whole program
    where seccomp stands: it cannot start a second process). ``output_bytes`` bounds each file
    it writes (printing is swallowed, not limited). ``max_processes`` (RLIMIT_NPROC, threads
    included) binds the child's own uid where namespaces work.
    """
    result, _ = _run(source, walls(), timeout, memory_mb, output_bytes, max_processes, tests, strict, context, entry)
    return result


def _run(source: str, walls_: Walls, timeout: float, memory_mb: int = 1024, output_bytes: int = 1_000_000,
         max_processes: int = 256, tests: str | None = None, strict: bool = False, context: str | None = None,
         entry=None, say_walls: bool = False) -> tuple[ExecResult, str]:
    nonce = secrets.token_hex(16)
    isolate = bool(walls_.prefix)
    # A uid no account uses, fresh per program, so RLIMIT_NPROC counts this program alone.
    uid = 2_000_000_000 + secrets.randbelow(100_000_000) if isolate and os.geteuid() == 0 else None
    workdir = tempfile.mkdtemp(prefix=f"boe_sandbox_{os.getpid()}_", dir=WORK_ROOT)
    try:
        # The report channel and stderr are anonymous: nothing the program does to its
        # directory (deleting it included) can take them from the parent.
        with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as report:
            args = {"isolate": isolate, "uid": uid, "cpu_s": math.ceil(timeout) + 2, "memory_bytes": memory_mb * 2**20,
                    "output_bytes": output_bytes, "processes": max_processes, "report_fd": report.fileno(),
                    "tmpfs_mb": max(16, 4 * output_bytes // 2**20), "timeout": float(timeout),
                    "landlock": walls_.landlock, "seccomp": walls_.seccomp, "forbidden": forbidden_paths(),
                    "strict": bool(strict), "done_line": DONE_LINE, "tests_line": TESTS_LINE,
                    "max_writes": MAX_WRITES, "say_walls": say_walls, "workdir": workdir,
                    "parent": os.getpid()}
            home = "/tmp" if isolate else workdir
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "TMPDIR": home,
                   "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}
            command = [*walls_.prefix, sys.executable, "-I", "-c", BOOTSTRAP, json.dumps(args)]
            payload = (nonce + "\n" + json.dumps([source, tests, context, list(entry) if entry else None])).encode()
            try:
                proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=err, pass_fds=(report.fileno(),), start_new_session=True)
            except OSError as error:
                return ExecResult(False, f"failed: could not start: {error}"), ""
            try:
                proc.communicate(payload, timeout=timeout + 2.0)
                killed = False
            except subprocess.TimeoutExpired:
                killed = True
            finally:
                _kill_group(proc)
            said = _tail(report, 4096)
            message = (said if said.strip() else _tail(err, 400)).decode(errors="replace").strip()
    finally:
        remove_tree(workdir)
    walls_said = ""
    if message.startswith("walls: "):
        walls_said, _, message = message.partition("\n")
        walls_said, message = walls_said[len("walls: "):], message.strip()
    if killed or (proc.returncode == 1 and message == "timed out"):
        return ExecResult(False, "timed out"), walls_said
    if proc.returncode == 0 and said.endswith(("\n" + nonce + "\n").encode()):
        return ExecResult(True, "passed"), walls_said
    return ExecResult(False, f"failed: {_reason(proc.returncode, message.replace(nonce, '<nonce>'))}"), walls_said


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
    """The child's whole session, then the child: nothing it started outlives its row (where
    seccomp stands it started nothing; in namespaces the PID namespace dies with it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill() if proc.poll() is None else None
    proc.wait()


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, PINNED = 0x80086601, 0x40086602, 0x10 | 0x20  # immutable, append-only


def _unpin(name: str, dir_fd: int) -> None:
    """Clear the immutable/append-only flags of ``name`` and give its owner every permission."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        fd = None
    if fd is not None:
        try:
            flags = int.from_bytes(fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4], sys.byteorder)
            if flags & PINNED:
                fcntl.ioctl(fd, FS_IOC_SETFLAGS, (flags & ~PINNED).to_bytes(4, sys.byteorder) + bytes(4))
        except OSError:
            pass
        finally:
            os.close(fd)
    try:
        if not stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
            os.chmod(name, 0o700, dir_fd=dir_fd)
    except OSError:
        pass


def remove_tree(path: str) -> bool:
    """Remove a work directory whatever the program left in it; never raises.

    ``shutil.rmtree`` first; where it fails (a chain deeper than the recursion limit, an
    immutable or append-only file, a directory without permissions) an iterative walk that
    holds one directory descriptor at a time, unpins what refuses to go and retries once."""
    try:
        shutil.rmtree(path)
        return True
    except FileNotFoundError:
        return True
    except (OSError, RecursionError):
        pass
    try:
        _unpin(os.path.basename(path), os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY))
        names, fd = [], os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        stuck = set()
        for _ in range(10_000_000):
            descended = False
            with os.scandir(fd) as entries:
                for entry in list(entries):
                    key = (len(names), entry.name)
                    if key in stuck:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        try:
                            sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                        except PermissionError:
                            _unpin(entry.name, fd)
                            try:
                                sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                            except OSError:
                                stuck.add(key)
                                continue
                        os.close(fd)
                        fd, descended = sub, True
                        names.append(entry.name)
                        break
                    try:
                        os.unlink(entry.name, dir_fd=fd)
                    except OSError:
                        _unpin(entry.name, fd)
                        try:
                            fcntl.ioctl(fd, FS_IOC_SETFLAGS, bytes(8))  # the directory itself may be pinned
                        except OSError:
                            pass
                        try:
                            os.unlink(entry.name, dir_fd=fd)
                        except OSError:
                            stuck.add(key)
            if descended:
                continue
            if not names:
                break
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, name = parent, names.pop()
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                _unpin(name, fd)
                try:
                    os.rmdir(name, dir_fd=fd)
                except OSError:
                    stuck.add((len(names), name))
        os.close(fd)
        os.rmdir(path)
        return True
    except OSError as error:
        print(f"warning: could not remove the sandbox directory {path}: {error}", file=sys.stderr)
        return False


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
