"""Identity resolution: linking source records to unified customers, with evidence.

``Resolver`` links batches (deterministic keys, then match probabilities from a
Fellegi-Sunter model over blocked candidates, clustered); ``merge_customers``/
``unmerge_customer`` are the manual tools; ``IdentityConfig`` holds the rules,
``LinkageModel`` the trained parameters and the probability thresholds.
"""

from __future__ import annotations

from gateway.identity.config import DEFAULT_CONFIG, IdentityConfig
from gateway.identity.linkage.linker import Decision, Review
from gateway.identity.linkage.resolution import Resolver
from gateway.identity.merges import merge_customers, refresh_golden
from gateway.identity.records import PreparedRecord, RecordError, prepare
from gateway.identity.scoring.evaluation import PairMetrics, pair_metrics
from gateway.identity.scoring.model import DEFAULT_MODEL, LinkageModel
from gateway.identity.unmerges import unmerge_customer

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_MODEL",
    "Decision",
    "IdentityConfig",
    "LinkageModel",
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
