"""`compile_decider`: the `tail_sampling` policies as one `TraceDecider`, in the decision order of TAIL-SAMPLING.md.

The order (docs/tail-sampling.md "The decision"): a matching `drop` policy → not sampled; an
inverted not-sample → not sampled; any policy that samples → sampled; else not sampled. The
outcome names the policy that made it, for the decision counters in `/_edge/metrics`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from edge.config import TailSamplingConfig
from edge.tailsampling.grouping import UNTRACED
from edge.tailsampling.interfaces import Decision, TraceDecider, TraceId
from edge.tailsampling.policies import SAMPLES, Clock, Evaluator, Verdict, attribute_keys, compile_policy
from edge.tailsampling.trace_view import TraceView, summarise

log = logging.getLogger(__name__)

UNTRACED_POLICY = "(no trace id)"  # spans that cannot be grouped pass through: there is no trace to judge
UNDECODABLE_POLICY = "(undecodable)"  # fail-open: spans the decider cannot read are kept, never dropped unseen
NOT_SAMPLED = Decision(False, "")


class PolicyDecider:
    """Compiled policies in their configured order; see the module doc for how their outcomes combine."""

    def __init__(self, policies: Sequence[tuple[str, Evaluator]], keys: frozenset[str],
                 sample_on_first_match: bool) -> None:
        self._policies = policies
        self._keys = keys
        self._first_match = sample_on_first_match

    def decide(self, trace_id: TraceId, payloads: Sequence[bytes]) -> Decision:
        if trace_id == UNTRACED:
            return Decision(True, UNTRACED_POLICY)
        try:
            view = summarise(trace_id, payloads, self._keys)
        except DecodeError:
            log.warning("trace %s: a fragment is not OTLP protobuf; sampled unread", trace_id.hex())
            return Decision(True, UNDECODABLE_POLICY)
        return self.decide_view(view)

    def decide_view(self, trace: TraceView) -> Decision:
        """Every policy in order (stopping at a drop, or at the first sample under sample_on_first_match), ranked."""
        sampled_by = inverted_by = ""
        for name, evaluator in self._policies:
            verdict = evaluator.evaluate(trace)
            if verdict is Verdict.DROPPED:
                return Decision(False, name)
            if verdict is Verdict.INVERT_NOT_SAMPLED:
                inverted_by = inverted_by or name
            elif verdict in SAMPLES:
                sampled_by = sampled_by or name
                if self._first_match:
                    break
        if inverted_by:
            return Decision(False, inverted_by)
        return Decision(True, sampled_by) if sampled_by else NOT_SAMPLED


def compile_decider(config: TailSamplingConfig, clock: Clock = time.time) -> TraceDecider:
    """The decider of a validated `tail_sampling` section; `clock` (wall seconds) drives the per-second budgets."""
    policies = [(policy["name"], compile_policy(policy, clock)) for policy in config.policies]
    return PolicyDecider(policies, attribute_keys(config.policies), config.sample_on_first_match)
