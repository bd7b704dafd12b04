"""python -m segnet.data download [--layout=tutorial|original] [--root=data/CamVid]
python -m segnet.data check --dataset=folder --data_root=DIR"""
import sys

from ..errors import UserError, run_cli
from . import camvid_download, check

COMMANDS = {"download": camvid_download.main, "check": check.main}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    raise UserError(f"usage: python -m segnet.data COMMAND [--key=value ...]; commands: {', '.join(COMMANDS)} "
                    f"(python -m segnet.data COMMAND --help)")


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
