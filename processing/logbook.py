"""The run log: one line per event, flushed at once so a watcher sees progress.

Line format: ``2026-11-25T03:14:15.926Z  <stage>  <message>``.
"""
import datetime
import sys
import time


class Logbook:
    def __init__(self, path=None, echo=False):
        self._file = open(path, "a", buffering=1, encoding="utf-8") if path else None
        self._echo = echo
        self.stage = "start"
        self.timings = {}          # stage -> wall seconds
        self._t0 = time.perf_counter()
        self._stage_t0 = self._t0

    def begin(self, stage):
        now = time.perf_counter()
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + now - self._stage_t0
        self.stage, self._stage_t0 = stage, now
        self.write(f"stage {stage} started")

    def write(self, message):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = f"{stamp}  {self.stage:<11s}  {message}"
        if self._file:
            self._file.write(line + "\n")
        if self._echo:
            print(line, file=sys.stderr, flush=True)

    __call__ = write

    def close(self):
        now = time.perf_counter()
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + now - self._stage_t0
        self.timings.pop("start", None)
        if self._file:
            self._file.close()
            self._file = None

    @property
    def elapsed(self):
        return time.perf_counter() - self._t0
