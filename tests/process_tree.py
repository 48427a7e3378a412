"""The process tree and shared memory of a command under test, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def processes() -> dict[int, int]:
    """pid → parent pid of every process (from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def descendants(pid: int) -> set[int]:
    parents = processes()
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {k for k, parent in parents.items() if parent == p}
        todo.extend(kids - found)
        found |= kids
    return found


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found |= {int(k) for k in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def shared_memory(pids) -> set[str]:
    """/dev/shm files mapped by ``pids`` that still have a name (the frame arena, semaphores)."""
    found = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/dev/shm/") and not parts[5].endswith("(deleted)"):
                found.add(parts[5].strip())
    return found
