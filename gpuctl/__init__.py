"""gpuctl: rent GPU machines from GPU clouds and make them Kubernetes nodes."""

__version__ = "0.1.0"
