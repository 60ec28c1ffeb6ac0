"""Text from files made safe to print: what a pack, manifest, list or checkpoint says cannot drive the terminal.

A class name is whatever a folder, a list or a checkpoint says it is. Printed raw, ``\\x1b[2J`` clears the
screen, ``\\r`` or a line break writes a fake line (``lit-imgcls: error: ...`` that lit-imgcls never said), and
U+202E turns the rest of a line around. Every line lit-imgcls prints with such strings in it goes through
:func:`printable`; warnings through :func:`warn`.
"""

from __future__ import annotations

import sys
from typing import TextIO

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``str(text)`` with every character that is not printable escaped as Python writes it (``\\n``, ``\\x1b``,
    ``\\u202e``): control characters (C0, DEL, C1), line and paragraph separators, format characters (bidi
    overrides, zero-width), surrogates (undecodable bytes of a file name), unassigned code points, and spaces
    other than the plain one. Letters of every script, marks and symbols pass unchanged.

    Args:
        text: anything; ``str()`` of it is taken.

    Returns:
        One line of text (no line breaks), safe to write to a terminal.
    """
    text = str(text)
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def printable_lines(text: str) -> str:
    """Each line of ``text`` through :func:`printable`, the line breaks between them kept (a report of several
    lines). A final line break is kept too."""
    lines = text.split("\n")
    return "\n".join(printable(line) for line in lines)


def warn(message: object, file: TextIO | None = None) -> None:
    """Prints ``lit-imgcls: warning: MESSAGE`` on stderr (or ``file``) as one printable line, flushed.

    Args:
        message: the warning, which may quote file names, class names and other strings from files.
        file: where to write; default ``sys.stderr`` at call time.
    """
    print(f"lit-imgcls: warning: {printable(message)}", file=file or sys.stderr, flush=True)
