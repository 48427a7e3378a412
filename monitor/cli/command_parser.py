"""The argument parser of every ``nanomaps`` command: one-line errors, help that keeps its paragraphs."""

from __future__ import annotations

import argparse
import sys
import textwrap

from monitor.exit_codes import EXIT_USAGE


class ParagraphHelpFormatter(argparse.HelpFormatter):
    """Wraps each blank-line-separated paragraph of description and epilog on its own.

    argparse's default joins every line of an epilog into one paragraph.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
        return "\n\n".join(textwrap.fill(p, width, initial_indent=indent, subsequent_indent=indent)
                           for p in paragraphs if p)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr and exit 2.

    The default prints the whole usage block first; a user at the beamline needs the
    mistake and where to read more, the same shape as every other nanomaps error.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", ParagraphHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
