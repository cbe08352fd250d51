"""The ``linux`` engine (issue 5, in progress): unmodified static Linux binaries.

So far: the system call policy (:mod:`.policy`), from which the seccomp
filter and the supervisor's dispatch are generated. The launcher, the
supervisor (seccomp user notification over :mod:`pappus.vfs`) and the engine
itself follow; the engine is not yet registered with the worker.
"""
