"""One exception type for mistakes a user can fix (bad path, bad value, wrong file).

The scripts catch it and print its message as one line, with no traceback; anything else is a bug
and keeps its traceback.
"""
import argparse
import sys


class UserError(Exception):
    """A problem with the user's input: the message names the thing and what was expected."""


def run_cli(main, argv=None):
    """Call `main(argv)`; a UserError becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except UserError as e:
        message = str(e)
        if "Original Traceback" in message:  # raised in a DataLoader worker: keep the last line
            message = message.strip().splitlines()[-1].split("UserError: ", 1)[-1]
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one UserError line (run_cli prints it) instead of usage + exit."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")
