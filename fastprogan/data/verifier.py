"""Background verification: a helper process that checks a level's per-image xxh3_64 ahead of the loader.

Why. On one core, hashing an image costs about 30% of copying it (128 px on the 2-core build machine:
copy 4.1 us per image from the page cache, xxh3_64 1.25 us from L2), so a loader that hashes every
image on its first read is that much slower in its first epoch at each level. A thread cannot take
the hashing off the loader: xxhash holds the GIL for buffers under 64 KB, and handing the GIL back
and forth once per image made the loader about 2x slower (measured, docs/datasets.md). A process has
its own interpreter: it hashes the images of the next few batches straight from the level file's
page cache while the loader copies the current batch, and writes its verdicts into the level's
shared record (``VerifiedLevel.state``). When the loader reaches those images it finds them checked
and takes the plain copy path.

Nothing depends on it for correctness: the loader still hashes every image it reads that the helper
has not checked (it starts behind, it may fall behind, it may be missing), and every verdict either
side writes is the same fact about the same bytes of the level file, so the batches, errors and skip
counts are the same with or without it (tests/data/test_background_verifier.py).

Shared memory, anonymous files passed to the helper as descriptors (POSIX; elsewhere the loader
hashes on its own):
  level record (``VerifiedLevel.share``): expected uint64 [N] | state uint8 [N]
  work ring (here): header int64 [8] | counts int64 [SLOTS] | indices int64 [SLOTS, WIDTH]
A loader publishes the dataset indices of the batches it will gather next (``publish``) and says how
far its gathers have got (``reached``); the helper checks the unconsumed slots nearest first. The
ring is a scheduling hint, not a protocol: a slot read while it is overwritten only makes the helper
check other images of the same level.

Waking. Each publish writes a byte to a pipe that the idle helper waits on, so it starts on a new
batch within a wake-up (tens of us) of its publication. It used to poll with a sleep that doubled
to 20 ms: a nap overshot the few batches of lead it had (one 128 px batch of 64 is ~1 ms of copies),
and the loader hashed ~25% of a first read itself (2-core build machine; first read 0.68-0.82 of
verify off). The pipe's end of file also tells the helper its parent is gone.

The helper imports numpy and xxhash only (not torch), so it starts in about 0.1 s; it exits when
told to, when its parent is gone, or at the parent's exit.
"""

from __future__ import annotations

import atexit
import mmap
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

import numpy as np

# Header words of the work ring.
_HEAD, _STOP, _CONSUMED, _SLOTS, _WIDTH, _HASHED, _READY = range(7)
_HEADER_WORDS = 8
SLOTS = 64  # published batches (or 256-image pieces of one) the ring holds
WIDTH = 256  # dataset indices per slot
# A level smaller than this is hashed by the loader alone: its whole first read costs the loader
# under ~2 ms (16 MB at the measured 8-39 GB/s), not worth a process start (~0.1 s of another core).
BACKGROUND_MIN_BYTES = 16 << 20
FINISHED_IDLE_S = 2.0  # the helper exits this long after the last work once the level is all checked


def supported() -> bool:
    """Whether this platform can run the helper (POSIX: descriptors passed to a child process)."""
    return os.name == "posix"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_share() -> int:
    """Usable CPUs per process of this node's job: ``usable_cpus()`` split over the node's ranks
    (``LOCAL_WORLD_SIZE``, set by torchrun), at least 1."""
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, usable_cpus() // local)


def _anonymous_mapping(size: int) -> tuple[object, mmap.mmap]:
    """(an unlinked temporary file, a shared read-write mapping of its ``size`` zero bytes)."""
    shm = "/dev/shm"  # RAM-backed where it exists: the mapping is never written back to a disk
    directory = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    file = tempfile.TemporaryFile(dir=directory)
    os.ftruncate(file.fileno(), size)
    return file, mmap.mmap(file.fileno(), size)


def shared_level_record(expected: np.ndarray, state: np.ndarray) -> tuple[object, np.ndarray]:
    """The level record in shared memory: (its file, state uint8 [N] view holding a copy of ``state``).
    The expected checksums go first in the same file, for the helper."""
    n = len(expected)
    file, mapping = _anonymous_mapping(max(1, 9 * n))
    np.frombuffer(mapping, np.uint64, n, 0)[:] = expected
    shared = np.frombuffer(mapping, np.uint8, n, 8 * n)  # [N]
    shared[:] = state
    return file, shared


class BackgroundVerifier:
    """The helper process of one level, and the parent's end of its work ring (thread-safe)."""

    def __init__(self, record_file, level_file: Path, num_images: int) -> None:
        self._ring_file, mapping = _anonymous_mapping(8 * (_HEADER_WORDS + SLOTS + SLOTS * WIDTH))
        self._header = np.frombuffer(mapping, np.int64, _HEADER_WORDS, 0)  # [8]
        self._counts = np.frombuffer(mapping, np.int64, SLOTS, 8 * _HEADER_WORDS)  # [SLOTS]
        self._ring = np.frombuffer(mapping, np.int64, SLOTS * WIDTH, 8 * (_HEADER_WORDS + SLOTS))
        self._ring = self._ring.reshape(SLOTS, WIDTH)  # [SLOTS, WIDTH]
        self._header[_SLOTS], self._header[_WIDTH] = SLOTS, WIDTH
        self._lock = threading.Lock()
        # The wake-up pipe: the helper waits on its read end; a publish writes a byte (never blocks: a
        # full pipe already holds a wake-up).
        wake_read, self._wake = os.pipe()
        os.set_blocking(self._wake, False)
        fds = (record_file.fileno(), self._ring_file.fileno(), wake_read)
        env = dict(os.environ)
        # The package's parent directory, so the helper finds this very fastprogan (a checkout put on
        # sys.path by a script is not in the child's environment).
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fastprogan.data.verifier",
                    *map(str, fds),
                    str(level_file),
                    str(num_images),
                ],
                pass_fds=fds,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError:
            os.close(self._wake)
            self._wake = -1
            raise
        finally:
            os.close(wake_read)  # the child holds its own copy
        _LIVE.add(self)

    def _wake_up(self) -> None:
        """Wake the helper if it waits (a byte on the pipe; a full pipe or a gone helper: no-op)."""
        try:
            os.write(self._wake, b"\0")
        except OSError:  # BlockingIOError: a wake-up is pending already; BrokenPipeError: it exited
            pass

    def publish(self, indices: np.ndarray) -> int:
        """Queue dataset indices [B] to check; returns the sequence number after them (for ``reached``)."""
        with self._lock:
            head = int(self._header[_HEAD])
            for start in range(0, len(indices), WIDTH):
                piece = indices[start : start + WIDTH]
                slot = head % SLOTS
                self._ring[slot, : len(piece)] = piece
                self._counts[slot] = len(piece)
                head += 1
                self._header[_HEAD] = head  # after the slot's contents (x86 keeps store order)
            self._wake_up()
            return head

    def reached(self, sequence: int) -> None:
        """The loader's gathers have got to ``sequence`` (from ``publish``): the helper skips slots
        before it (the loader hashes what is left of them itself)."""
        with self._lock:
            self._header[_CONSUMED] = max(int(self._header[_CONSUMED]), sequence)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def failed(self) -> bool:
        """It exited with an error (a normal exit, 0, means the level was all checked)."""
        code = self.process.poll()
        return code is not None and code != 0

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Wait until the helper is up (imports done, level mapped); False if it exited or timed out."""
        deadline = time.monotonic() + timeout
        while not self._header[_READY]:
            if not self.alive or time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    @property
    def hashed(self) -> int:
        """Images the helper has hashed so far."""
        return int(self._header[_HASHED])

    def cpu_seconds(self) -> float | None:
        """The helper's CPU time so far (user + system), from /proc; None where that is unavailable."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Ask the helper to exit and wait for it (at most 2 s, then kill it)."""
        self._header[_STOP] = 1
        self._close_wake()  # end of file on the pipe: the helper exits now
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _LIVE.discard(self)

    def _close_wake(self) -> None:
        with self._lock:
            if self._wake >= 0:
                os.close(self._wake)
                self._wake = -1

    def __del__(self) -> None:
        header = getattr(self, "_header", None)
        if header is not None:
            header[_STOP] = 1
        if getattr(self, "_wake", -1) >= 0:
            self._close_wake()  # the helper sees end of file and exits


_LIVE: weakref.WeakSet[BackgroundVerifier] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for verifier in list(_LIVE):
        verifier.stop()


# ---------------------------------------------------------------------------------------------------
# The helper process (python -m fastprogan.data.verifier RECORD_FD RING_FD WAKE_FD LEVEL_FILE N): numpy
# and xxhash only.


def _serve(record_fd: int, ring_fd: int, wake_fd: int, level_file: str, n: int) -> None:
    import xxhash

    images = np.load(level_file, mmap_mode="r").view(np.ndarray)  # [N, C, R, R], validated by the parent
    record = mmap.mmap(record_fd, 0)
    expected = np.frombuffer(record, np.uint64, n, 0).tolist()  # Python ints: a cheap compare
    state = np.frombuffer(record, np.uint8, n, 8 * n)  # [N] 0 unchecked, 1 sound, 2 corrupt
    ring_map = mmap.mmap(ring_fd, 0)
    header = np.frombuffer(ring_map, np.int64, _HEADER_WORDS, 0)
    slots, width = int(header[_SLOTS]), int(header[_WIDTH])
    counts = np.frombuffer(ring_map, np.int64, slots, 8 * _HEADER_WORDS)
    ring = np.frombuffer(ring_map, np.int64, slots * width, 8 * (_HEADER_WORDS + slots)).reshape(slots, width)
    # The per-image loop through memoryviews: slicing one and reading an int from one cost ~0.1 us
    # less per image than numpy's indexing (which builds an array object each time).
    flat, size = memoryview(images.reshape(-1)), images[0].nbytes  # uint8 [N * C * R * R]
    verdicts = memoryview(state)  # the same bytes as state
    words = memoryview(ring_map)[: 8 * _HEADER_WORDS].cast("q")  # the header
    parent = os.getppid()
    os.set_blocking(wake_fd, False)
    digest = xxhash.xxh3_64_intdigest
    hashed, idle_since = 0, time.monotonic()
    header[_READY] = 1
    while not header[_STOP]:
        head = int(header[_HEAD])
        todo, seq = None, 0
        for seq in range(max(int(header[_CONSUMED]), head - slots), head):  # nearest batch first
            slot = seq % slots
            idx = ring[slot, : min(int(counts[slot]), width)]
            idx = idx[(idx >= 0) & (idx < n)]  # a slot being rewritten may hold anything
            idx = idx[state[idx] == 0]
            if len(idx):
                todo = np.sort(idx).tolist()  # ascending: friendlier to readahead
                break
        if todo is None:
            if os.getppid() != parent:
                return
            # Every image checked and nothing asked for a while: done (the level's first epoch is
            # over; a loader that meets unchecked images again starts a new helper).
            if time.monotonic() - idle_since > FINISHED_IDLE_S and not (state == 0).any():
                return
            # Idle: wait for the next publish (or 20 ms, to look at the parent and the level again).
            if select.select([wake_fd], [], [], 0.02)[0]:
                try:
                    if not os.read(wake_fd, 4096):  # end of file: the parent stopped us, or is gone
                        return
                except BlockingIOError:
                    pass
            continue
        idle_since = time.monotonic()
        for i in todo:
            # Has the loader reached this batch? Then it hashes what is left of it (in the visit that
            # copies it) and we move to the next batch: hashing on would do its work twice and never
            # get ahead. One read of shared memory, ~0.04 us.
            if words[_CONSUMED] > seq:
                break
            if verdicts[i] == 0:  # the loader may have got there first
                verdicts[i] = 1 if digest(flat[i * size : (i + 1) * size]) == expected[i] else 2
                hashed += 1
        words[_HASHED] = hashed


if __name__ == "__main__":
    try:
        _serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    except OSError as exc:  # e.g. the level file gone before the helper opened it: the loader hashes alone
        sys.exit(f"fastprogan background verifier: {exc}")
