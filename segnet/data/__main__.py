"""python -m segnet.data download [--layout=tutorial|original] [--root=data/CamVid]"""
import sys

from ..errors import run_cli
from .download import main

if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
