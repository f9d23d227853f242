"""Run a command under the confinement systemd/ponderd.service asks for, without systemd.

    unshare --mount --propagation private -- python tests/sandbox.py UNIT -- COMMAND...

systemd cannot run in the test container, so this applies the unit's
confinement that could break a Python daemon, the way systemd applies it:

- SystemCallFilter= lines: an allow-list from `systemd-analyze syscall-filter`
  (this systemd's own group definitions), with SystemCallErrorNumber= for the
  rest, loaded with libseccomp as systemd does; native architecture only
  (SystemCallArchitectures=native);
- RestrictAddressFamilies=: socket() only for the families listed;
- MemoryDenyWriteExecute=yes: systemd's seccomp rules (no mmap that is both
  writable and executable, no mprotect/pkey_mprotect adding PROT_EXEC), and
  the kernel's own PR_SET_MDWE as well;
- NoNewPrivileges=yes; ProcSubset=pid with ProtectProc=invisible (a /proc
  mounted subset=pid,hidepid=invisible: no /proc/cpuinfo, /proc/meminfo);
  PrivateDevices=yes (a /dev holding null, zero, full, random, urandom and a
  fresh /dev/shm).

The mounts need a private mount namespace (hence unshare) and root.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pathlib
import re
import socket
import subprocess
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 4, 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 65, 1


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def unit_values(unit: pathlib.Path, key: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"(?m)^{key}=(.*)$", unit.read_text())]


def expand(names: list[str], seen: set[str] | None = None) -> set[str]:
    """System call names of `names` (groups like @system-service expanded by systemd-analyze)."""
    seen = set() if seen is None else seen
    out: set[str] = set()
    for name in names:
        if not name.startswith("@"):
            out.add(name)
            continue
        if name in seen:
            continue
        seen.add(name)
        listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True)
        members = [line.strip() for line in listing.stdout.splitlines()[1:]
                   if line.strip() and not line.strip().startswith("#")]
        out |= expand(members, seen)
    return out


def allowed_syscalls(unit: pathlib.Path) -> set[str]:
    allowed: set[str] = set()
    for value in unit_values(unit, "SystemCallFilter"):
        if value.startswith("~"):
            allowed -= expand(value[1:].split())
        else:
            allowed |= expand(value.split())
    return allowed


def private_mounts() -> None:
    """ProcSubset=pid, ProtectProc=invisible, PrivateDevices=yes, in this (private) mount namespace."""
    def sh(*args: str) -> None:
        subprocess.run(args, check=True)

    sh("mount", "-t", "proc", "-o", "subset=pid,hidepid=invisible", "proc", "/proc")
    keep = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"sandbox-dev-{os.getpid()}"
    keep.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(keep))
    for dev in ("null", "zero", "full", "random", "urandom"):
        (keep / dev).touch()
        sh("mount", "--bind", f"/dev/{dev}", str(keep / dev))
    (keep / "shm").mkdir(mode=0o1777)
    sh("mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", str(keep / "shm"))
    sh("mount", "--move", str(keep), "/dev")


def load_seccomp(unit: pathlib.Path) -> None:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    error = getattr(errno, (unit_values(unit, "SystemCallErrorNumber") or ["EPERM"])[-1])
    ctx = lib.seccomp_init(0x00050000 | error)  # SCMP_ACT_ERRNO(error) for whatever is not allowed

    def allow(name: str, *conditions: tuple[int, int, int, int]) -> None:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a system call on this architecture
        args = (ArgCmp * max(1, len(conditions)))(*[ArgCmp(*c) for c in conditions])
        rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, len(conditions), args)
        if rc != 0:
            raise OSError(-rc, f"seccomp_rule_add {name}")

    special = {"socket", "mmap", "mmap2", "mprotect", "pkey_mprotect"}
    allowed = allowed_syscalls(unit)
    for name in sorted(allowed - special):
        allow(name)
    families = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}
    for family in " ".join(unit_values(unit, "RestrictAddressFamilies")).split():
        allow("socket", (0, SCMP_CMP_EQ, families[family], 0))
    mdwe = "yes" in unit_values(unit, "MemoryDenyWriteExecute")
    wx = PROT_WRITE | PROT_EXEC
    for name in ("mmap", "mmap2") if {"mmap", "mmap2"} & allowed else ():
        if mdwe:  # allowed unless both writable and executable
            for prot in (0, PROT_WRITE, PROT_EXEC):
                allow(name, (2, SCMP_CMP_MASKED_EQ, wx, prot))
        else:
            allow(name)
    for name in ("mprotect", "pkey_mprotect") if {"mprotect", "pkey_mprotect"} & allowed else ():
        if mdwe:  # allowed unless it adds PROT_EXEC
            allow(name, (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, 0))
        else:
            allow(name)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if mdwe and libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_MDWE (Linux 6.3 or newer)")
    rc = lib.seccomp_load(ctx)
    if rc != 0:
        raise OSError(-rc, "seccomp_load")


def main(argv: list[str]) -> None:
    unit, command = pathlib.Path(argv[0]), argv[argv.index("--") + 1:]
    private_mounts()
    load_seccomp(unit)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
