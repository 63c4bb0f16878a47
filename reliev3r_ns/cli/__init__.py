"""Console scripts. Each parses a tyro dataclass and runs its ``main`` through :func:`run_cli`."""

from __future__ import annotations

import sys
from typing import Any, Tuple, Type


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
