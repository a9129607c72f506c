"""The names disruption shares with the cluster: annotations, the taint, the finalizer.

Every piece of disruption state lives on the objects (GPUNodeRequest annotations,
a Node taint, a finalizer), never only in memory: an operator killed at any point
picks up from what the API server holds.
"""

from __future__ import annotations

from gpuctl.api import ANNOTATION_DO_NOT_DISRUPT, LABEL_POOL
from gpuctl.api.constants import GPU_RESOURCES as BY_VENDOR

# Pod (or Node) annotation: never evicted by a voluntary disruption (Karpenter's
# karpenter.sh/do-not-disrupt); "true" is the only value that counts.
DO_NOT_DISRUPT = ANNOTATION_DO_NOT_DISRUPT
# The pool a GPUNodeRequest (and its Node) belongs to.
POOL = LABEL_POOL
# On a pool's GPUNodeRequest while it is being disrupted: the reason
# (Empty | Underutilized | Expired), when it started, and its replacements.
DISRUPTION = "gpuctl.io/disruption"
DISRUPTION_STARTED = "gpuctl.io/disruption-started"
REPLACEMENTS = "gpuctl.io/disruption-replacements"
SAVINGS = "gpuctl.io/disruption-savings"  # USD per hour the decision saves
# When a disruption of the machine was last abandoned: it is not retried for a while.
ABANDONED = "gpuctl.io/disruption-abandoned"
# On a replacement GPUNodeRequest: the machine it replaces.
REPLACES = "gpuctl.io/replaces"
# When the set of pods on the machine last changed (consolidateAfter counts from
# it, as Karpenter's lastPodEventTime) and a digest of that set.
LAST_POD_EVENT = "gpuctl.io/last-pod-event"
PODS_DIGEST = "gpuctl.io/pods-digest"
# On the Node of a machine being disrupted: nothing new is scheduled there
# (Karpenter's karpenter.sh/disrupted:NoSchedule).
DISRUPTED_TAINT = "gpuctl.io/disrupted"
# On every pool GPUNodeRequest: its deletion waits until the Node is drained.
DRAIN_FINALIZER = "gpuctl.io/drain"

# The extended resources GPUs are advertised as (nvidia.com/gpu, amd.com/gpu).
GPU_RESOURCES = tuple(BY_VENDOR.values())
