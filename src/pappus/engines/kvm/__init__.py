"""The ``kvm`` engine: Dandelion-SDK functions at ring 3 of a microVM with no guest OS.

See :mod:`pappus.engines.kvm.engine` for the design and ``docs/kvm-engine.md``
for the memory layout, the exit protocol, the reset procedure and the
nested-KVM quirks.
"""

from pappus.engines.kvm.engine import KvmArtifact as KvmArtifact
from pappus.engines.kvm.engine import KvmEngine as KvmEngine
from pappus.engines.kvm.engine import kvm_available as kvm_available
