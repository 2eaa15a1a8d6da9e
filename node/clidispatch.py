"""Shared dispatcher for the three console scripts: each sub-command is a module with main(argv) -> int.

Modules are imported only when their sub-command runs, so a command pays only for its own module and a
broken optional module cannot stop the others from working. (The district tools' own scripts use it too;
the node's command table names no provisioning module: the Pi does not carry them.)
"""

from __future__ import annotations

import importlib
import sys


def dispatch(prog: str, commands: dict[str, tuple[str, str]], argv: list[str] | None) -> int:
    """`commands` maps a sub-command to (module path, one-line help)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(len(name) for name in commands)
        print(f"usage: {prog} COMMAND [ARGS...]\n\ncommands:")
        for name, (_, text) in commands.items():
            print(f"  {name:<{width}}  {text}")
        print(f"\nRun '{prog} COMMAND --help' for the options of one command.")
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        from node import __version__

        print(f"{prog} {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        import difflib

        near = difflib.get_close_matches(name, list(commands), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        print(f"{prog}: unknown command '{name}'{hint}; see '{prog} --help'", file=sys.stderr)
        return 2
    module = importlib.import_module(commands[name][0])
    try:
        main_fn = getattr(module, "main_" + name.replace("-", "_"), None) or module.main
        return int(main_fn(rest) or 0)
    except KeyboardInterrupt:
        return 130
