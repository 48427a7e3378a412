"""ZeroMQ TCP addresses as users type them: parsed, checked, and probed before use.

ZeroMQ accepts a malformed address with a bare ``Invalid argument`` and connects to an
unreachable one silently forever; a beamline user deserves one line that names the
address and the fix, at start, not a traceback or a hang.
"""

from __future__ import annotations

import socket


class AddressError(ValueError):
    """An address that is malformed, or where nothing listens."""


def parse_tcp_address(address: str, *, what: str = "address", allow_any_port: bool = False) -> tuple[str, str]:
    """``tcp://HOST:PORT`` → (host, port). PORT may be ``*`` where ``allow_any_port``.

    Raises :class:`AddressError` naming ``what`` and the expected form.
    """
    example = "tcp://127.0.0.1:9999"
    if not isinstance(address, str) or not address.startswith("tcp://"):
        hint = f" (did you mean tcp://{address}?)" if isinstance(address, str) and ":" in address \
            and "://" not in address else ""
        raise AddressError(f"{what} {address!r}: expected tcp://HOST:PORT, e.g. {example}{hint}")
    host, sep, port = address.removeprefix("tcp://").rpartition(":")
    port_ok = port.isdigit() and 0 < int(port) < 65536 or (allow_any_port and port == "*")
    if not sep or not host or not port_ok:
        raise AddressError(f"{what} {address!r}: expected tcp://HOST:PORT with a port 1-65535, e.g. {example}")
    return host.strip("[]"), port


def check_connect_address(address: str, *, what: str = "address") -> None:
    """A connect address: ``tcp://HOST:PORT``, or ``ipc://``/``inproc://`` (not checked further)."""
    if isinstance(address, str) and address.startswith(("ipc://", "inproc://")):
        return
    parse_tcp_address(address, what=what)


def check_listening(address: str, *, what: str, timeout_s: float = 2.0) -> None:
    """Something accepts TCP connections at ``address`` (a probe: connect, then close).

    Raises :class:`AddressError` naming ``what`` and the address when nothing does.
    """
    if address.startswith(("ipc://", "inproc://")):
        return
    host, port = parse_tcp_address(address, what=what)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise AddressError(f"{what} {address}: nothing answers there ({reason}). Fix: start it first, "
                           "or pass the right address") from None
