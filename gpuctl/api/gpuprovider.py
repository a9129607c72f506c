"""GPUProvider (gpuctl.io/v1alpha1, cluster-scoped, short name `gpr`): one GPU cloud account.

The spec names the cloud (`type`, immutable), where its API key is (a Secret
key), optional endpoint/rate-limit/price overrides, how machines join the
cluster (`bootstrap`), and exactly one per-cloud block: `lambda` iff type is
lambda, `runpod` iff runpod, `paperspace` iff paperspace, `crusoe` iff crusoe,
`hyperstack` iff hyperstack, `digitalocean` iff digitalocean (enforced by CEL).

Registration timeout defaults differ per cloud because boot times do (8xH100 on
Lambda takes over 20 minutes): Lambda 30m, RunPod 20m, Paperspace 20m, Crusoe 20m,
Hyperstack 20m, DigitalOcean 20m (`DEFAULT_REGISTRATION_TIMEOUTS`). A GPUNodeRequest's
own registrationTimeout wins over the provider's; see `registration_timeout()`.
"""

from __future__ import annotations

import datetime
import enum
from decimal import Decimal

import attrs

from gpuctl.api.constants import GPR_KIND, GPR_PLURAL, Region
from gpuctl.api.gpunoderequest import GPUNodeRequestSpec, duration_doc
from gpuctl.api.meta import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    MAX_CONDITIONS,
    Condition,
    ObjectMeta,
)
from gpuctl.api.resource import Resource
from gpuctl.api.schema import IMMUTABLE, Rule, doc, item
from gpuctl.api.units import PRICE_PATTERN, parse_duration

SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
CA_CERT_HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
KUBERNETES_VERSION_PATTERN = r"^v[0-9]+\.[0-9]+\.[0-9]+$"
# host:port or an https URL; kubeadm and k3s both take these forms.
API_SERVER_ENDPOINT_PATTERN = r"^(https://)?[^\s/:]+(:[0-9]{1,5})?/?$"


class ProviderType(enum.StrEnum):
    LAMBDA = "lambda"
    RUNPOD = "runpod"
    PAPERSPACE = "paperspace"
    CRUSOE = "crusoe"
    HYPERSTACK = "hyperstack"
    DIGITALOCEAN = "digitalocean"


DEFAULT_REGISTRATION_TIMEOUTS: dict[ProviderType, datetime.timedelta] = {
    ProviderType.LAMBDA: datetime.timedelta(minutes=30),
    ProviderType.RUNPOD: datetime.timedelta(minutes=20),
    ProviderType.PAPERSPACE: datetime.timedelta(minutes=20),
    ProviderType.CRUSOE: datetime.timedelta(minutes=20),
    ProviderType.HYPERSTACK: datetime.timedelta(minutes=20),
    ProviderType.DIGITALOCEAN: datetime.timedelta(minutes=20),
}
CIDR_PATTERN = r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"
SSH_PUBLIC_KEY_PATTERN = r"^(ssh-|ecdsa-|sk-)[^\s]+ [^\s]+"


class BootstrapMethod(enum.StrEnum):
    KUBEADM = "kubeadm"  # kubeadm join with a bootstrap token
    K3S = "k3s"  # k3s agent with a join token
    TALOS = "talos"  # a Talos machine config rendered from templateSecretRef
    SCRIPT = "script"  # a user script rendered from templateSecretRef


class RunPodCloudType(enum.StrEnum):
    SECURE = "SECURE"
    COMMUNITY = "COMMUNITY"


class PublicIPType(enum.StrEnum):
    STATIC = "static"
    DYNAMIC = "dynamic"
    NONE = "none"


# -- spec ------------------------------------------------------------------------


@attrs.define(kw_only=True)
class CredentialsSecretRef:
    namespace: str = attrs.field(
        metadata=doc("Namespace of the Secret.", pattern=DNS_LABEL_PATTERN, max_length=63)
    )
    name: str = attrs.field(
        metadata=doc("Name of the Secret.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
    )
    key: str = attrs.field(
        default="apiKey",
        metadata=doc(
            "Key in the Secret's data holding the API key (default apiKey).",
            pattern=SECRET_KEY_PATTERN,
            max_length=253,
        ),
    )


@attrs.define(kw_only=True)
class SecretKeyRef:
    namespace: str = attrs.field(
        metadata=doc("Namespace of the Secret.", pattern=DNS_LABEL_PATTERN, max_length=63)
    )
    name: str = attrs.field(
        metadata=doc("Name of the Secret.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
    )
    key: str = attrs.field(
        metadata=doc("Key in the Secret's data.", pattern=SECRET_KEY_PATTERN, max_length=253)
    )


@attrs.define(kw_only=True)
class RateLimit:
    requests_per_second: float | None = attrs.field(
        default=None,
        metadata=doc(
            "Most API requests per second to this cloud account (overrides the "
            "documented default, e.g. Lambda 1/s).",
            minimum=0,
            exclusive_minimum=True,
            maximum=1000,
        ),
    )
    launches_per_minute: int | None = attrs.field(
        default=None,
        metadata=doc(
            "Most launches per minute (overrides the default, e.g. Lambda 5/min).",
            minimum=1,
            maximum=600,
        ),
    )


@attrs.define(kw_only=True)
class Bootstrap:
    __validations__ = (
        Rule(
            "!(self.method in ['talos', 'script']) || has(self.templateSecretRef)",
            "bootstrap methods talos and script require spec.bootstrap.templateSecretRef",
            field_path=".templateSecretRef",
            reason="FieldValueRequired",
        ),
        Rule(
            "!(self.method in ['kubeadm', 'k3s']) || has(self.apiServerEndpoint)",
            "bootstrap methods kubeadm and k3s require spec.bootstrap.apiServerEndpoint",
            field_path=".apiServerEndpoint",
            reason="FieldValueRequired",
        ),
    )

    method: BootstrapMethod = attrs.field(
        default=BootstrapMethod.KUBEADM,
        metadata=doc(
            "How a machine joins the cluster: kubeadm (default), k3s, talos or script "
            "(talos and script render templateSecretRef)."
        ),
    )
    api_server_endpoint: str | None = attrs.field(
        default=None,
        metadata=doc(
            "The cluster's API server as reachable from the cloud machine: host:port or "
            "https://host:port. Required for kubeadm and k3s.",
            pattern=API_SERVER_ENDPOINT_PATTERN,
            max_length=512,
        ),
    )
    ca_cert_hash: str | None = attrs.field(
        default=None,
        metadata=doc(
            "sha256:<hex> hash of the cluster CA's public key, pinned by kubeadm join. "
            "Unset: computed from the cluster's CA.",
            pattern=CA_CERT_HASH_PATTERN,
            max_length=71,
        ),
    )
    kubernetes_version: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Kubelet version to install, e.g. v1.31.2. Unset: the control plane's version.",
            pattern=KUBERNETES_VERSION_PATTERN,
            max_length=32,
        ),
    )
    template_secret_ref: SecretKeyRef | None = attrs.field(
        default=None,
        metadata=doc(
            "Secret key holding the machine config (talos) or script (script) template. "
            "Required for talos and script."
        ),
    )
    extra_args: list[str] = attrs.field(
        factory=list,
        metadata=doc(
            "Extra command-line arguments for the join command (kubeadm join, k3s agent).",
            max_items=32,
            items=item(max_length=1024),
        ),
    )


@attrs.define(kw_only=True)
class LambdaConfig:
    ssh_key_name: str = attrs.field(
        metadata=doc(
            "Name of an SSH key registered in the Lambda account; Lambda requires exactly "
            "one at launch.",
            min_length=1,
            max_length=64,
        )
    )
    image: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Image family to boot, e.g. lambda-stack-22-04. Unset: Lambda's default.",
            max_length=128,
        ),
    )
    file_system_names: list[str] = attrs.field(
        factory=list,
        metadata=doc(
            "Lambda persistent file systems to attach, by name (sent as file_system_names "
            "at launch; each must be in the machine's region).",
            max_items=8,
            items=item(max_length=64),
        ),
    )


@attrs.define(kw_only=True)
class RunPodConfig:
    image_name: str = attrs.field(
        metadata=doc(
            "Container image the pod runs; its command must join the cluster with the "
            "environment gpuctl passes.",
            min_length=1,
            max_length=512,
        )
    )
    cloud_type: RunPodCloudType = attrs.field(
        default=RunPodCloudType.SECURE,
        metadata=doc("RunPod cloud: SECURE (default, data centres) or COMMUNITY (hosts)."),
    )
    container_disk_gb: int | None = attrs.field(
        default=None,
        metadata=doc(
            "Container disk in GB (sent as containerDiskInGb). Unset: RunPod's default (50).",
            name="containerDiskGB",
            minimum=1,
            maximum=10000,
        ),
    )
    volume_gb: int | None = attrs.field(
        default=None,
        metadata=doc(
            "Pod volume in GB (sent as volumeInGb; 0: none). Unset: RunPod's default (20).",
            name="volumeGB",
            minimum=0,
            maximum=10000,
        ),
    )


@attrs.define(kw_only=True)
class PaperspaceConfig:
    template_id: str = attrs.field(
        metadata=doc("Id of the OS or custom template to boot.", min_length=1, max_length=64)
    )
    disk_size_gb: int = attrs.field(
        default=100,
        metadata=doc(
            "Boot disk size in GB, 50 to 16000 (default 100).",
            name="diskSizeGB",
            minimum=50,
            maximum=16000,
        ),
    )
    public_ip_type: PublicIPType | None = attrs.field(
        default=None,
        metadata=doc(
            "Public IP: static, dynamic or none (sent as publicIpType). Unset: "
            "Paperspace's default."
        ),
    )


@attrs.define(kw_only=True)
class CrusoeConfig:
    ssh_public_key: str = attrs.field(
        metadata=doc(
            "OpenSSH public key put on every VM (sent as ssh_public_key; Crusoe creates no "
            "VM without one). gpuctl itself never logs in.",
            name="sshPublicKey",
            pattern=r"^(ssh-|ecdsa-|sk-)[^\s]+ [^\s]+",
            max_length=16384,
        )
    )
    project_id: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Crusoe project the VMs go into (part of every VM path). Unset: the account's "
            "only project.",
            name="projectId",
            min_length=1,
            max_length=64,
        ),
    )
    image: str | None = attrs.field(
        default=None,
        metadata=doc(
            "OS image (sent as image), e.g. ubuntu22.04-nvidia-sxm-docker:latest. Unset: "
            "Crusoe's default image.",
            min_length=1,
            max_length=256,
        ),
    )


@attrs.define(kw_only=True)
class HyperstackConfig:
    __validations__ = (
        Rule(
            "has(self.sshKeyName) || has(self.sshPublicKey)",
            "one of sshKeyName or sshPublicKey is required: Hyperstack creates no VM "
            "without a key pair",
        ),
    )

    ssh_key_name: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Key pair to put on every VM (sent as key_name); it must exist in the VM's "
            "environment. Unset: the environment's first key pair, else sshPublicKey.",
            name="sshKeyName",
            min_length=1,
            max_length=64,
        ),
    )
    ssh_public_key: str | None = attrs.field(
        default=None,
        metadata=doc(
            "OpenSSH public key imported as key pair gpuctl into an environment that has "
            "none. gpuctl itself never logs in.",
            name="sshPublicKey",
            pattern=SSH_PUBLIC_KEY_PATTERN,
            max_length=16384,
        ),
    )
    image: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Image to boot (sent as image_name). Unset: Ubuntu Server 22.04 LTS R535 CUDA 12.2.",
            min_length=1,
            max_length=256,
        ),
    )
    environment_prefix: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Prefix of the environment gpuctl uses per region (prefix + the region in lower "
            "case, created when missing). Unset: gpuctl-.",
            pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$",
            max_length=32,
        ),
    )
    assign_floating_ip: bool = attrs.field(
        default=True,
        metadata=doc(
            "Give every VM a public IP (sent as assign_floating_ip; default true).",
            name="assignFloatingIP",
        ),
    )
    kubelet_source_cidr: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Source of the security rule opening the kubelet's port 10250 (for the API "
            "server's logs, exec, port-forward). Unset: 0.0.0.0/0.",
            name="kubeletSourceCIDR",
            pattern=CIDR_PATTERN,
            max_length=64,
        ),
    )


@attrs.define(kw_only=True)
class DigitalOceanConfig:
    ssh_keys: list[str] = attrs.field(
        factory=list,
        metadata=doc(
            "SSH keys put on every Droplet, by id or fingerprint (sent as ssh_keys). Empty: "
            "the account's first key (without one DigitalOcean e-mails a root password, so "
            "gpuctl refuses to launch).",
            name="sshKeys",
            max_items=16,
            items=item(min_length=1, max_length=128),
        ),
    )
    image: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Image slug or id to boot (sent as image). Unset: gpu-h100x1-base, "
            "DigitalOcean's AI/ML-ready image (NVIDIA drivers and CUDA).",
            min_length=1,
            max_length=128,
        ),
    )
    firewall: bool = attrs.field(
        default=True,
        metadata=doc(
            "Keep a Cloud Firewall gpuctl-<provider> on the provider's Droplets (by tag): "
            "kubelet port 10250 in, everything out (default true)."
        ),
    )
    kubelet_source_cidr: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Source of the firewall's kubelet rule (port 10250). Unset: anywhere.",
            name="kubeletSourceCIDR",
            pattern=CIDR_PATTERN,
            max_length=64,
        ),
    )
    ssh_source_cidr: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Open SSH (port 22) from this source in the firewall. Unset: closed.",
            name="sshSourceCIDR",
            pattern=CIDR_PATTERN,
            max_length=64,
        ),
    )


def _block_rule(cloud: ProviderType) -> Rule:
    return Rule(
        f"has(self.{cloud.value}) == (self.type == '{cloud.value}')",
        f"spec.{cloud.value} must be set if and only if spec.type is {cloud.value}",
        field_path=f".{cloud.value}",
    )


@attrs.define(kw_only=True)
class GPUProviderSpec:
    __validations__ = tuple(_block_rule(cloud) for cloud in ProviderType)

    type: ProviderType = attrs.field(
        metadata=doc(
            "The cloud: lambda, runpod, paperspace, crusoe, hyperstack or digitalocean. Immutable.",
            rules=[IMMUTABLE],
        )
    )
    credentials_secret_ref: CredentialsSecretRef = attrs.field(
        metadata=doc("The Secret key holding the cloud API key.")
    )
    endpoint: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Base URL of the cloud API, to use a simulator or a proxy. Unset: the "
            "cloud's public API.",
            pattern=r"^https?://[^\s]+$",
            max_length=2048,
        ),
    )
    regions: list[Region] = attrs.field(
        factory=list,
        metadata=doc(
            "Normalised regions this provider may launch in, from: "
            + ", ".join(Region)
            + ". Unset or empty: all.",
            max_items=len(Region),
            list_type="set",
        ),
    )
    rate_limit: RateLimit | None = attrs.field(
        default=None, metadata=doc("Overrides of the client-side API rate limits.")
    )
    registration_timeout: str | None = attrs.field(
        default=None,
        metadata=duration_doc(
            "How long a launched machine may take to register as a Node, as a Go "
            "duration. Unset: lambda 30m, runpod 20m, paperspace 20m, crusoe 20m, "
            "hyperstack 20m, digitalocean 20m."
        ),
    )
    bootstrap: Bootstrap = attrs.field(
        metadata=doc("How machines from this provider join the cluster.")
    )
    lambda_: LambdaConfig | None = attrs.field(
        default=None,
        metadata=doc("Lambda Cloud settings; required iff type is lambda.", name="lambda"),
    )
    runpod: RunPodConfig | None = attrs.field(
        default=None, metadata=doc("RunPod settings; required iff type is runpod.")
    )
    paperspace: PaperspaceConfig | None = attrs.field(
        default=None, metadata=doc("Paperspace settings; required iff type is paperspace.")
    )
    crusoe: CrusoeConfig | None = attrs.field(
        default=None, metadata=doc("Crusoe Cloud settings; required iff type is crusoe.")
    )
    hyperstack: HyperstackConfig | None = attrs.field(
        default=None, metadata=doc("Hyperstack settings; required iff type is hyperstack.")
    )
    digitalocean: DigitalOceanConfig | None = attrs.field(
        default=None,
        metadata=doc("DigitalOcean settings; required iff type is digitalocean."),
    )
    prices: dict[str, Decimal] = attrs.field(
        factory=dict,
        metadata=doc(
            "Price overrides in USD per instance-hour by the cloud's instance type, as "
            "decimal strings (Paperspace and Crusoe have no price API: their built-in tables are "
            "dated).",
            max_properties=256,
            items=item(pattern=PRICE_PATTERN, max_length=16),
        ),
    )

    def registration_timeout_delta(self) -> datetime.timedelta:
        """This provider's registration timeout, or its cloud's default."""
        if self.registration_timeout:
            return parse_duration(self.registration_timeout)
        return DEFAULT_REGISTRATION_TIMEOUTS[self.type]


# -- status ----------------------------------------------------------------------


@attrs.define(kw_only=True)
class GPUProviderStatus:
    conditions: list[Condition] = attrs.field(
        factory=list,
        metadata=doc(
            "Conditions: CredentialsValid (the cloud accepted the key) and Ready "
            "(usable for launches).",
            max_items=MAX_CONDITIONS,
            list_type="map",
            list_map_keys=["type"],
        ),
    )
    offer_count: int | None = attrs.field(
        default=None, metadata=doc("Offers seen at the last catalog refresh.", minimum=0)
    )
    last_price_refresh: datetime.datetime | None = attrs.field(
        default=None, metadata=doc("When the catalog and prices were last fetched.")
    )
    observed_generation: int | None = attrs.field(
        default=None, metadata=doc("The .metadata.generation this status reflects.", minimum=0)
    )
    message: str | None = attrs.field(
        default=None, metadata=doc("Human-readable summary, e.g. the last error.", max_length=32768)
    )


@attrs.define(kw_only=True)
class GPUProvider(Resource):
    """GPUProvider is one GPU cloud account gpuctl may rent machines from.

    It names the cloud, the Secret holding the API key, how machines join the
    cluster, and the cloud's own launch settings (exactly one of lambda, runpod,
    paperspace, crusoe, hyperstack, digitalocean, matching type).
    """

    KIND = GPR_KIND
    PLURAL = GPR_PLURAL

    metadata: ObjectMeta = attrs.field(metadata=doc("Standard object metadata."))
    spec: GPUProviderSpec = attrs.field(
        metadata=doc(
            "The cloud, its credentials, how machines join the cluster, and the "
            "cloud's own launch settings."
        )
    )
    status: GPUProviderStatus = attrs.field(
        factory=GPUProviderStatus,
        metadata=doc("Whether the account is usable; written by gpuctl."),
    )


def registration_timeout(
    request: GPUNodeRequestSpec, provider: GPUProviderSpec
) -> datetime.timedelta:
    """The effective registration timeout: the request's, else the provider's, else the cloud's."""
    if request.registration_timeout:
        return parse_duration(request.registration_timeout)
    return provider.registration_timeout_delta()
