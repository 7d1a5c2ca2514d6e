"""Runs a script and kills it with SIGKILL right after an epoch's backup, for resume tests.

usage: python killed_after_backup.py BACKUP_NAME EPOCH SCRIPT [SCRIPT FLAGS...]

Every `keras.callbacks.BackupAndRestore` the script makes whose backup folder is
named BACKUP_NAME (in the pipeline: the arm's name) kills the process as soon
as it has backed up epoch EPOCH, as a machine failure would. The script itself
is run unchanged, as `__main__`.
"""

import os
import runpy
import signal
import sys

import keras

name, kill_at, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class KilledAfterBackup(keras.callbacks.BackupAndRestore):
    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)  # the backup of this epoch is written
        if epoch == kill_at and os.path.basename(os.path.normpath(self.backup_dir)) == name:
            os.kill(os.getpid(), signal.SIGKILL)


keras.callbacks.BackupAndRestore = KilledAfterBackup
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
