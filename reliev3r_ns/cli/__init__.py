"""Console scripts. Each parses a tyro dataclass and runs its ``main`` through :func:`run_cli`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Type


def run_cli(command_type: Any, description: str, user_errors: Tuple[Type[BaseException], ...]) -> None:
    """Parse the command line into ``command_type``, run its ``main()``, and turn the errors a user can
    fix (bad input, missing files) into ``error: <message>`` on stderr and exit code 2. Messages are
    printed verbatim (no rich markup: paths and lists in them contain brackets)."""
    import tyro

    command = tyro.cli(command_type, description=description)
    try:
        command.main()
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def named_checkpoints(items: Sequence[str]) -> Dict[str, Path]:
    """``--checkpoint NAME=PATH`` arguments (several FFRM checkpoints to compare) as {name: path}. Exits with a message
    naming the argument when one has no ``=``, names a file that does not exist, or repeats a name."""
    checkpoints: Dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise SystemExit(f"--checkpoint {item!r}: expected NAME=PATH to an existing reliev3r-export-ffrm file")
        if name in checkpoints:
            raise SystemExit(f"--checkpoint {item!r}: the name {name!r} is given twice; give each checkpoint its own name")
        checkpoints[name] = Path(path)
    return checkpoints
