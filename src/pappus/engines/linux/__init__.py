"""The ``linux`` engine: unmodified static Linux executables behind a user-space syscall layer.

* :mod:`.policy` — the system call table, from which the seccomp filter and
  the supervisor's dispatch are generated;
* ``launcher.c`` — the tiny native launcher (limits, filter, exec);
* :mod:`.notify` — seccomp user notification and the program's memory;
* :mod:`.files` — Linux file calls over the set-backed file system;
* :mod:`.supervisor` — the notification loop; :mod:`.outcome` — typed outcomes;
* :mod:`.engine` — :class:`LinuxEngine`. See ``docs/linux-engine.md``.
"""

from pappus.engines.linux.engine import LinuxEngine as LinuxEngine
