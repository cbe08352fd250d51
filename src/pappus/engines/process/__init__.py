"""The ``process`` engine: Dandelion-SDK ELF functions in fresh seccomp-confined processes.

See :mod:`pappus.engines.process.engine` for the design and
``docs/process-engine.md`` for the policy table and the SDK guide.
"""

from pappus.engines.process.engine import ProcessArtifact as ProcessArtifact
from pappus.engines.process.engine import ProcessEngine as ProcessEngine
