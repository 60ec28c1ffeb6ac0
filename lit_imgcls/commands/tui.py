from __future__ import annotations

from typing import Optional


def tui(runs_dir: str = "runs", attach: Optional[str] = None) -> None:
    """Terminal UI: build recipes, launch runs, watch accuracy and throughput live, compare runs, pack datasets.

    Keys: F1 recipe builder, F2 launch, F3 monitor, F4 runs, F5 pack, ? help, Ctrl+Q quit. Runs started here keep
    running after the UI quits; any run folder (also one started from the command line) can be watched.
    Needs the tui extra: pip install 'lit-imgcls[tui]'.

    Args:
        runs_dir: folder holding the run folders (fit's --run-dir).
        attach: open the Monitor on this run folder.
    """
    from lit_imgcls.errors import UsageError

    try:
        from tui.app import LitImgclsApp
    except ImportError as exc:
        raise UsageError(f"the terminal UI needs Textual: pip install 'lit-imgcls[tui]' ({exc})") from None
    LitImgclsApp(runs_dir=runs_dir, attach=attach).run()
