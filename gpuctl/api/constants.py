"""Names gpuctl shares with the API server and with every controller.

Group/version/kinds/plurals address the two CRDs; the finalizer guards a paid
machine; the labels mark what gpuctl created; the condition types are the
`status.conditions[].type` values gpuctl writes.
"""

from __future__ import annotations

import enum

GROUP = "gpuctl.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "gpuctl"

GNR_KIND = "GPUNodeRequest"
GNR_LIST_KIND = "GPUNodeRequestList"
GNR_PLURAL = "gpunoderequests"
GNR_SINGULAR = "gpunoderequest"
GNR_SHORT_NAME = "gnr"

GPR_KIND = "GPUProvider"
GPR_LIST_KIND = "GPUProviderList"
GPR_PLURAL = "gpuproviders"
GPR_SINGULAR = "gpuprovider"
GPR_SHORT_NAME = "gpr"

GNP_KIND = "GPUNodePool"
GNP_LIST_KIND = "GPUNodePoolList"
GNP_PLURAL = "gpunodepools"
GNP_SINGULAR = "gpunodepool"
GNP_SHORT_NAME = "gnp"

# Held on a GPUNodeRequest while a cloud machine may exist for it: deleting the
# request only completes once the machine is confirmed gone (no leaked bills).
FINALIZER = "gpuctl.io/instance"

# Keys under this prefix are gpuctl's own: users may not set them in spec.node.labels.
RESERVED_LABEL_PREFIX = "gpuctl.io/"
LABEL_REQUEST = "gpuctl.io/request"  # the GPUNodeRequest's name
LABEL_INSTANCE_NAME = "gpuctl.io/instance-name"  # the cloud machine's deterministic name
LABEL_PROVIDER = "gpuctl.io/provider"  # the GPUProvider's name
LABEL_CAPACITY_TYPE = "gpuctl.io/capacity-type"  # on-demand | spot (what was launched)
LABEL_GPU_TYPE = "gpuctl.io/gpu-type"  # normalised GPU name, e.g. H100-80GB
LABEL_GPU_COUNT = "gpuctl.io/gpu-count"  # GPUs in the machine, e.g. 8
LABEL_REGION = "gpuctl.io/region"  # normalised region, e.g. us-east
LABEL_POOL = "gpuctl.io/pool"  # the GPUNodePool a request (and its Node) belongs to
# Well-known labels (kubelets may set them themselves under NodeRestriction).
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"  # the cloud's machine type
LABEL_TOPOLOGY_REGION = "topology.kubernetes.io/region"  # the cloud's own region
# The extended resource a machine's GPUs are advertised as, by the GPU's vendor: the
# names NVIDIA's k8s-device-plugin and ROCm's k8s-device-plugin register. The catalog
# (gpuctl/providers/tables/gpus.yaml) says each GPU type's vendor.
GPU_RESOURCE_NVIDIA = "nvidia.com/gpu"
GPU_RESOURCE_AMD = "amd.com/gpu"
GPU_RESOURCES = {"nvidia": GPU_RESOURCE_NVIDIA, "amd": GPU_RESOURCE_AMD}
# On a pod: never evict it to disrupt its machine (Karpenter's karpenter.sh/do-not-disrupt).
ANNOTATION_DO_NOT_DISRUPT = "gpuctl.io/do-not-disrupt"


class ConditionType(enum.StrEnum):
    """`status.conditions[].type` values (metav1.Condition), CamelCase by convention."""

    # GPUNodeRequest
    OFFER_AVAILABLE = "OfferAvailable"  # an offer fits the request's constraints
    LAUNCHED = "Launched"  # the cloud accepted the launch; a machine exists
    REGISTERED = "Registered"  # the machine joined: its Node object exists
    READY = "Ready"  # GNR: the Node is Ready; GPR: the provider is usable
    INTERRUPTED = "Interrupted"  # the cloud reclaimed (preempted) the spot machine
    # GPUNodePool (also READY: the pool can launch)
    LIMIT_REACHED = "LimitReached"  # a limit stops launches for pending pods
    # GPUProvider
    CREDENTIALS_VALID = "CredentialsValid"  # the cloud accepted the API key


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Region(enum.StrEnum):
    """gpuctl's normalised regions; each cloud's regions map onto these.

    The mapping is data in gpuctl/providers/tables/regions.yaml (a unit test keeps
    this list and that table equal).
    """

    US_EAST = "us-east"
    US_CENTRAL = "us-central"
    US_WEST = "us-west"
    CA_EAST = "ca-east"
    EU_WEST = "eu-west"
    EU_CENTRAL = "eu-central"
    EU_NORTH = "eu-north"
    ASIA_NORTHEAST = "asia-northeast"
    ASIA_SOUTH = "asia-south"
    ME_WEST = "me-west"
    OCEANIA = "oceania"
