"""Exit codes, the same for every ``nanomaps`` command (documented in ``--help`` and the README)."""

from __future__ import annotations

EXIT_OK = 0                 # done: frames processed / files written
EXIT_NOTHING_PROCESSED = 1  # not one frame could be processed, or the receiver or recording failed
EXIT_USAGE = 2              # a mistake in the command, config, input files or environment: one line on stderr
EXIT_INTERRUPTED = 130      # Ctrl-C (SIGINT) before the work was done


def exit_codes_help(on_interrupt: str = "130 when stopped by Ctrl-C") -> str:
    """The paragraph for a command's ``--help`` epilog; ``on_interrupt`` says what Ctrl-C gives."""
    return ("exit codes: 0 done; 1 data came but not one frame could be processed, or (process, record) the "
            "receiver or the recording failed; 2 a usage, config, input or "
            f"environment error (one line on stderr, no traceback); {on_interrupt}.")
