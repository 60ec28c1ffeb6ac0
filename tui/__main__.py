"""``python -m tui [--runs-dir runs] [--attach RUN_FOLDER]``: the same as ``lit-imgcls tui``."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tui", description="lit-imgcls terminal UI")
    parser.add_argument("--runs-dir", default="runs", help="folder with the run folders (default runs)")
    parser.add_argument("--attach", default=None, help="open the Monitor on this run folder")
    args = parser.parse_args(argv)
    from tui.app import LitImgclsApp

    LitImgclsApp(runs_dir=args.runs_dir, attach=args.attach).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
