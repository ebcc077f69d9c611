"""Audits produced beyond record fields: LLM judges and HTTP graders, sampled under a budget.

``service.build_audits`` wires them into a pipeline; the other modules are one concern each:
``sampler`` (which outputs), ``budget`` (how many), ``queue`` (durable work), ``judge`` and
``grader`` (the producers, on ``producer``'s HTTP and ``resilience``'s retry rules), ``worker``
(the job) and ``metrics`` (the series).
"""

from agent.audit.service import AuditService, build_audits, key_problems

__all__ = ["AuditService", "build_audits", "key_problems"]
