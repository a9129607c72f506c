"""The GPUNodeRequest controller: `controller` runs the steps, one module per step."""
