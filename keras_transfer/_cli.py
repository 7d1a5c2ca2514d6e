"""Private helpers shared by the absl scripts in `scripts/`."""

import sys

from absl import flags

from keras_transfer import errors


def main_for(run, prog):
    """Wraps `run()` as an absl `main(argv)`: bad input gives one line, exit 1.

    A `TransferError` (a missing or tampered file, a bad data folder, ...) is
    printed as `<prog>: error: <message>` on stderr, with no traceback unless
    `--verbosity` is 1 or more.
    """

    def main(argv):
        del argv
        try:
            return run()
        except errors.TransferError as e:
            if flags.FLAGS.verbosity > 0:
                raise
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 1

    return main
