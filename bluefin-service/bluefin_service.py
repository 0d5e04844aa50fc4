"""The guide's launcher: ``cd bluefin-service && python bluefin_service.py`` starts the streaming service.

The same as ``python -m bluefin_service`` (same flags), and it also reads ``bluefin-service/.env`` next to this
file, whatever the working directory. Priority: command-line flags, then the environment, then this directory's
``.env``, then ``.env`` in the working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _use_the_package() -> None:
    """Run as a script, this directory is ``sys.path[0]`` and ``import bluefin_service`` would find this file."""
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
    sys.path.insert(0, str(REPO))
    module = sys.modules.get("bluefin_service")
    if module is not None and Path(getattr(module, "__file__", "") or "").resolve() == Path(__file__).resolve():
        del sys.modules["bluefin_service"]


def main(argv: list[str] | None = None) -> int:
    _use_the_package()
    try:
        from bluefin_service.__main__ import main as run_service
    except ImportError as exc:
        print(
            f"bluefin_service.py: cannot import the service ({exc}).\n"
            "Install the project first (`make run` from the repository root does it), then run this with the\n"
            "project's Python: `../.venv/bin/python bluefin_service.py`.",
            file=sys.stderr,
        )
        return 1
    env_files = tuple(dict.fromkeys([Path(".env").resolve(), HERE / ".env"]))  # later files win
    return run_service(sys.argv[1:] if argv is None else argv, env_files=env_files)


if __name__ == "__main__":
    raise SystemExit(main())
