"""The runtime `Resource`s of gpuctl's own kinds (gpuctl.api holds the names)."""

from __future__ import annotations

from gpuctl.api import (
    GNP_KIND,
    GNP_PLURAL,
    GNR_KIND,
    GNR_PLURAL,
    GPR_KIND,
    GPR_PLURAL,
    GROUP,
    VERSION,
)
from gpuctl.runtime.resources import Resource

GPUNODEREQUESTS = Resource(GROUP, VERSION, GNR_PLURAL, GNR_KIND, namespaced=False)
GPUPROVIDERS = Resource(GROUP, VERSION, GPR_PLURAL, GPR_KIND, namespaced=False)
GPUNODEPOOLS = Resource(GROUP, VERSION, GNP_PLURAL, GNP_KIND, namespaced=False)
