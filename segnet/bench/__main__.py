"""python -m segnet.bench: the command is segnet/bench/command.py (its docstring: `--help`)."""
import sys

from ..errors import run_cli
from .command import main

sys.exit(run_cli(main))
