"""Computed proxies: numbers the agent derives from the record itself (``compute:`` on a proxy).

In a sidecar the app often logs only the conversation, so the agent computes the usual proxies:
the length of a text, the time between two timestamps, whether a pattern occurs, whether a text is
valid JSON, or what a user-trained scikit-learn model predicts from it. Each kind lives in its own
module with a ``build(spec) -> Computer`` function; ``base`` holds what they share and ``building``
turns a validated config into computers, reporting what cannot be built as config errors.

This package sits above ``agent.config`` (it builds from validated specs) and below
``agent.records`` (the parser runs the computers). Import from ``agent.compute``.
"""

from agent.compute.base import COMPUTE_REASONS, BuildError, ComputeFailure, Computer, field_value, text_at
from agent.compute.building import build_computer, build_computers, load_and_build, merge_problems

__all__ = [
    "COMPUTE_REASONS",
    "BuildError",
    "ComputeFailure",
    "Computer",
    "build_computer",
    "build_computers",
    "field_value",
    "load_and_build",
    "merge_problems",
    "text_at",
]
