"""Identity resolution: linking source records to unified customers, with evidence.

``Resolver`` links batches (deterministic keys, then Fellegi-Sunter scores over
blocked candidates); ``merge_customers``/``unmerge_customer`` are the manual tools;
``IdentityConfig`` holds every rule and threshold.
"""

from __future__ import annotations

from gateway.identity.config import DEFAULT_CONFIG, FieldRule, IdentityConfig
from gateway.identity.evaluation import PairMetrics, pair_metrics
from gateway.identity.linkage import Decision, Review
from gateway.identity.merges import merge_customers, refresh_golden, unmerge_customer
from gateway.identity.records import PreparedRecord, RecordError, prepare
from gateway.identity.resolution import Resolver

__all__ = [
    "DEFAULT_CONFIG",
    "Decision",
    "FieldRule",
    "IdentityConfig",
    "PairMetrics",
    "PreparedRecord",
    "RecordError",
    "Resolver",
    "Review",
    "merge_customers",
    "pair_metrics",
    "prepare",
    "refresh_golden",
    "unmerge_customer",
]
