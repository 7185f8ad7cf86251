"""Run a function with a wall-clock budget from any thread or process.

math-verify bounds its own work with ``signal.alarm``, which only works in the
main thread of the main interpreter; GRPO rewards are also called from worker
threads (async reward loops, evaluation pools) and daemonic worker processes.
:func:`call_with_deadline` works in all of them (and :func:`call_with_alarm`, for a
caller that must keep the function in its own thread, uses ``SIGALRM`` where it can):

- ``fn`` runs in a fresh daemon thread; the caller waits at most ``budget_s``
  seconds and then returns ``default``.
- A late worker is stopped by raising :class:`DeadlineExceeded` inside it
  (``PyThreadState_SetAsyncExc``), re-sent every ``_REAP_INTERVAL_S`` (for up
  to ~10 s) in case library code swallows it, so abandoned work does not keep
  burning CPU.
- Thread-local state that the interrupted code may have left half-changed
  (e.g. sympy's ``evaluate(False)`` context) dies with the worker thread.

Limit (shared with signals): an exception is delivered between bytecodes, so a
single long C call that holds the GIL (a huge integer power) can neither be
interrupted nor let the caller return. Callers must keep such inputs out with
cheap guards first (see :mod:`rewards.mathcheck`).
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
D = TypeVar("D")

_REAP_INTERVAL_S = 0.05
_REAP_TRIES = 200  # ~10 s of re-sending before the worker is left alone


class DeadlineExceeded(BaseException):
    """Raised inside a worker that ran past its budget.

    A ``BaseException`` so that the ``except Exception`` blocks of the
    interrupted library code do not swallow it.
    """


def _send(thread_id: int, exc: type[BaseException] | None) -> None:
    # None clears a pending asynchronous exception (NULL in the C API).
    payload = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), payload)


class _Worker(threading.Thread):
    """Runs ``fn`` once; interruptible only while inside ``fn`` (``self.running``).

    ``running`` is set as the first statement inside the ``try`` around ``fn``
    and cleared under ``self.lock``, the lock :meth:`interrupt` sends under, so
    an interrupt can land only inside that ``try`` or in the few bytecodes of
    its epilogue, which catch it too; never in ``threading``'s own code.
    """

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(name="rewards-deadline", daemon=True)
        self.fn = fn
        self.value: object = None
        self.error: BaseException | None = None
        self.running = False
        self.finished = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            try:
                self.running = True
                self.value = self.fn()
            except DeadlineExceeded:
                self.error = None  # the caller already returned its default
            except BaseException as exc:  # handed back to the caller
                self.error = exc
            finally:
                self._disarm()
        except DeadlineExceeded:  # sent just as fn returned; no new one can come after _disarm
            self._disarm()
        self.finished.set()

    def _disarm(self) -> None:
        with self.lock:
            self.running = False
            if self.ident is not None:
                _send(self.ident, None)  # drop an interrupt sent but not yet delivered

    def interrupt(self) -> bool:
        """Send DeadlineExceeded if the worker is still inside ``fn``."""
        with self.lock:
            if not self.running or self.ident is None or not self.is_alive():
                return False
            _send(self.ident, DeadlineExceeded)
            return True


class _DropOurUnraisable:
    """``sys.unraisablehook`` wrapper that drops a :class:`DeadlineExceeded` landing where it cannot propagate.

    An interrupt delivered while the worker runs a finalizer (``__del__``, a weakref or gc
    callback) is reported by Python as "unraisable" and the work goes on; the reaper sends
    another. The report is noise (the caller already returned its default), so it is
    dropped; every other unraisable exception goes to the hook that was installed before.
    """

    def __init__(self, hook: Callable) -> None:
        self.hook = hook

    def __call__(self, unraisable) -> None:
        if isinstance(unraisable.exc_value, DeadlineExceeded) or unraisable.exc_type is DeadlineExceeded:
            return
        self.hook(unraisable)


def _quiet_unraisable() -> None:
    """Install :class:`_DropOurUnraisable` over the current hook (once; only when a worker is interrupted)."""
    if not isinstance(sys.unraisablehook, _DropOurUnraisable):
        sys.unraisablehook = _DropOurUnraisable(sys.unraisablehook)


def _reap(worker: _Worker) -> None:
    # Re-send in case library code swallowed the interrupt (a bare except, a gc callback).
    for _ in range(_REAP_TRIES):
        if worker.finished.wait(_REAP_INTERVAL_S) or not worker.interrupt():
            return


def call_with_deadline(fn: Callable[[], T], budget_s: float, default: D) -> T | D:
    """Return ``fn()``, or ``default`` when it runs longer than ``budget_s`` seconds.

    Exceptions raised by ``fn`` are re-raised in the caller.

    >>> call_with_deadline(lambda: 2 + 2, 1.0, default=None)
    4
    >>> import time
    >>> call_with_deadline(lambda: [time.sleep(0.01) for _ in range(500)], 0.1, "late")
    'late'
    """
    worker = _Worker(fn)
    worker.start()
    if worker.finished.wait(budget_s):
        if worker.error is not None:
            raise worker.error
        return worker.value  # type: ignore[return-value]
    _quiet_unraisable()
    if worker.interrupt():
        threading.Thread(target=_reap, args=(worker,), name="rewards-reaper", daemon=True).start()
    return default


def call_with_alarm(fn: Callable[[], T], budget_s: float, default: D) -> T | D:
    """Return ``fn()`` run in *this* thread, or ``default`` when it runs longer than ``budget_s`` seconds.

    In the main thread on Unix the bound is ``SIGALRM`` (``setitimer``), so ``fn`` keeps the main thread:
    code that needs it (``signal.alarm``, as math-verify's own timeouts) works, and a blocking system call
    (a socket read) is interrupted too. If ``fn`` sets an alarm of its own, that alarm replaces this one for
    its duration (so its own bound applies); an alarm pending outside is restored afterwards. Elsewhere
    (another thread, no ``setitimer``) this is :func:`call_with_deadline`.

    >>> call_with_alarm(lambda: 2 + 2, 1.0, default=None)
    4
    >>> call_with_alarm(lambda: time.sleep(5), 0.1, "late")
    'late'
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return call_with_deadline(fn, budget_s, default)

    def on_alarm(signum, frame):
        raise DeadlineExceeded

    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, budget_s)
    value: T | D = default
    try:
        try:
            value = fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except DeadlineExceeded:  # in fn, or just as it returned: late either way
        value = default
    finally:
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:  # someone else's alarm was pending: give it back what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))
    return value
