"""Trusted communication functions (``HTTP``) and their egress policy.

Compute functions are pure; every byte that enters or leaves the worker on
their behalf goes through a communication function, run by the worker itself
on its event loop, under :class:`~pappus.communication.egress.EgressPolicy`.
"""

from pappus.communication.egress import EgressPolicy as EgressPolicy
from pappus.communication.http import HttpFunction as HttpFunction
