#!/usr/bin/env python3
"""A disk whose cache flushes are slow, for the audit writer's tests.

Serves the regular files of BACKING at MOUNTPOINT through FUSE (libfuse3,
mfusepy), passing every operation through, except that each fsync sleeps
--fsync-delay-ms first. Put a file system image here and attach it to a loop
device: the loop driver turns the file system's cache flushes (every
fdatasync, every journal commit) into an fsync of the image, so syncs on
that file system take at least the delay while its page-cache writes do
not wait. That is a disk that is slow to make data durable, the case the
writer's sync thread is for.

    slowdisk.py BACKING MOUNTPOINT --fsync-delay-ms 400 [--delay-file F]

With --delay-file, a number of milliseconds in F (read at each fsync)
overrides the delay while F exists: a test can make the disk fast again.

Runs in the foreground until unmounted (umount MOUNTPOINT) or killed.
Installed into $REPO/.venv by scripts/bootstrap (mfusepy); needs root.
"""

import argparse
import errno
import os
import sys
import time

import mfusepy as fuse


class SlowFlushes(fuse.Operations):
    use_ns = True

    def __init__(self, backing, delay_s, delay_file):
        self.backing = backing
        self.delay_s = delay_s
        self.delay_file = delay_file

    def _delay(self):
        if self.delay_file:
            try:
                with open(self.delay_file) as f:
                    return max(0, int(f.read().strip())) / 1000
            except (OSError, ValueError):
                pass
        return self.delay_s

    def _path(self, path):
        name = path.lstrip("/")
        if "/" in name:
            raise fuse.FuseOSError(errno.ENOENT)
        return os.path.join(self.backing, name)

    def getattr(self, path, fh=None):
        st = os.lstat(self.backing if path == "/" else self._path(path))
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path, fh):
        return [".", ".."] + sorted(os.listdir(self.backing))

    def open(self, path, flags):
        return os.open(self._path(path), flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC))

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        os.truncate(self._path(path), length)

    def fsync(self, path, datasync, fh):
        time.sleep(self._delay())
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0

    def statfs(self, path):
        st = os.statvfs(self.backing)
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("backing", help="directory holding the image file(s)")
    ap.add_argument("mountpoint")
    ap.add_argument("--fsync-delay-ms", type=int, default=400, help="sleep before each fsync (default 400)")
    ap.add_argument("--delay-file", help="a file whose number (ms) overrides the delay while it exists")
    a = ap.parse_args()
    if a.fsync_delay_ms < 0:
        ap.error("--fsync-delay-ms must be >= 0")
    for d in (a.backing, a.mountpoint):
        if not os.path.isdir(d):
            ap.error(f"{d}: not a directory")
    ops = SlowFlushes(os.path.abspath(a.backing), a.fsync_delay_ms / 1000, a.delay_file)
    # Threads: writes go on while an fsync sleeps.
    fuse.FUSE(ops, a.mountpoint, foreground=True, nothreads=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
