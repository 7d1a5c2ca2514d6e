"""Private file helpers: atomic writes and sha256 digests, computed and checked;
JSON records beside a `BackupAndRestore` backup, wherever Keras keeps it."""

import contextlib
import hashlib
import json
import os
import re
import tempfile

# Keras' own file functions: os for a local path, tf.io.gfile for a remote one
# (gs://, any path Keras' `is_remote_path` names). `BackupAndRestore` writes
# through them, and a record kept beside its backup must reach the same folder;
# Keras exports no public form of them. If they move, importing the package
# fails; if they change what they do, tests/test_recipes.py's
# test_sweep_phase2_stopped_inside_its_first_epoch_keeps_its_sweeps_rate[remote]
# fails.
from keras.src.utils import file_utils

from keras_transfer import errors


@contextlib.contextmanager
def atomic_write(path):
    """Yields a temporary path beside `path`; moves it over `path` on success.

    The temporary file lives in the same folder, so `os.replace` is atomic: a
    reader sees the old file or the new one, never a half-written one. If the
    body raises, the temporary file is removed and `path` is left untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder
    )
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give a normal file's mode
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def sha256_of(source, chunk_size=1 << 20):
    """Returns the hex sha256 digest of a file: its path, or the file open in
    binary mode (read from its start; the position is left at the end)."""
    if not hasattr(source, "read"):
        with open(source, "rb") as f:
            return sha256_of(f, chunk_size)
    digest = hashlib.sha256()
    source.seek(0)
    for chunk in iter(lambda: source.read(chunk_size), b""):
        digest.update(chunk)
    return digest.hexdigest()


def check_sha256_argument(sha256, argument="sha256="):
    """Refuses an expected digest that is not 64 hexadecimal digits (None passes).

    Raises:
        ArgumentTypeError: `sha256` is not a string.
        ArgumentError: `sha256` is not 64 hexadecimal digits.
    """
    if sha256 is None:
        return
    if not isinstance(sha256, str):
        raise errors.ArgumentTypeError(
            f"{argument} must be a string of 64 hexadecimal digits (the file's "
            f"sha256 hex digest), received {type(sha256).__name__} {sha256!r}.")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise errors.ArgumentError(
            f"{argument} must be 64 hexadecimal digits (the file's sha256 hex "
            f"digest, as `sha256sum` prints it), received {sha256!r}.")


def check_digest(where, actual, expected, what_to_do):
    """Raises `ChecksumError` unless the hex digest `actual` is `expected`
    (compared case-insensitively); `where` names the file, `what_to_do` ends
    the message."""
    if actual.lower() != expected.lower():
        raise errors.ChecksumError(
            f"{where} has sha256 {actual}, expected {expected}: {what_to_do}")


def write_json(data, path):
    """Writes `data` as indented JSON to the local `path`, atomically."""
    with atomic_write(path) as tmp:
        with open(tmp, "w") as f:
            f.write(_json_text(data))
    return path


def write_record(data, path):
    """Writes `data` as JSON to `path` beside a `BackupAndRestore` backup.

    `path` goes where Keras writes the backup: a local path atomically, as
    `write_json`; a path Keras' `is_remote_path` names (gs://, any URL, a few
    cluster prefixes such as /gcs) through tf.io.gfile, in one write. Not
    atomic there: an object store (gs://) publishes an object whole on close,
    but other gfile file systems may show a partial file to a reader.
    """
    path = os.fspath(path)
    if not file_utils.is_remote_path(path):
        return write_json(data, path)
    file_utils.makedirs(os.path.dirname(path))  # gfile's: no error if it exists
    with file_utils.File(path, "w") as f:
        f.write(_json_text(data))
    return path


def read_record(path):
    """Reads the JSON that `write_record` wrote to `path`."""
    with file_utils.File(os.fspath(path)) as f:
        return json.loads(f.read())


def record_exists(path):
    """Whether `path`, local or remote as for `write_record`, exists."""
    return file_utils.exists(os.fspath(path))


def _json_text(data):
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
