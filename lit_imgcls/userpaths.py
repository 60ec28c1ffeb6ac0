"""Paths as people write them: ``~``, ``~user``, ``$VAR`` and ``${VAR}`` mean what a POSIX shell makes of them.

A recipe file or a quoted flag (``--model-prefix '~/runs/x'``) reaches lit-imgcls unexpanded. Expanded by some
readers and not by others, ``~/x`` would become a literal ``./~`` folder holding half a run while Lightning
writes the other half under the home folder; so the recipe's path keys are expanded here, once, when the recipe
is checked (:func:`lit_imgcls.recipe.expand_paths`), and every command sees the same paths.
"""

from __future__ import annotations

import os
import string

from lit_imgcls.errors import UsageError


def is_url(text: str) -> bool:
    """True for ``scheme://...`` (s3://, http(s)://, file://): a location that is not a shell path."""
    return "://" in text


def expand_path(text: str, key: str = "path") -> str:
    """``text`` with a leading ``~`` or ``~user`` and every ``$NAME`` / ``${NAME}`` expanded, as a shell would.

    URLs (anything with ``://``) are returned unchanged. ``$$`` stands for a literal ``$``.

    Args:
        text: the path as written.
        key: what the path is for (a recipe key), named in the error message.

    Returns:
        The expanded path (a str); relative paths stay relative.

    Raises:
        UsageError: a variable that is not set (a shell would silently make it empty, writing elsewhere than
            meant), ``$`` not followed by a name (``${VAR:-default}`` is not supported), or ``~user`` of a
            user this machine does not know.
    """
    if is_url(text) or ("$" not in text and not text.startswith("~")):
        return text
    shown = text if len(text) <= 120 else text[:117] + "..."
    try:
        # string.Template's $NAME / ${NAME} / $$ are the shell's simple forms; it refuses the rest.
        text = string.Template(text).substitute(os.environ)
    except KeyError as exc:
        raise UsageError(f"{key} {shown!r} names the environment variable {exc.args[0]}, which is not set; set it, "
                         "or write $$ for a literal $") from None
    except ValueError:
        raise UsageError(f"{key} {shown!r}: $ must be followed by a variable NAME or {{NAME}} (write $$ for a "
                         "literal $; ${NAME:-default} and other shell forms are not supported)") from None
    if text.startswith("~"):
        expanded = os.path.expanduser(text)
        if expanded.startswith("~"):
            user = text[1:].split("/", 1)[0]
            raise UsageError(f"{key} {shown!r}: no user {user!r} on this machine (~ or ~user starts a home folder; "
                             "write ./~ for a folder named ~)")
        text = expanded
    return text
