"""Simulated machines: what each cloud runs at boot, executed for real (docs/sim.md#machines).

- `cloudinit`: Lambda user data read as cloud-init reads it;
- `joindata`: per cloud, what a new machine runs (or why nothing runs);
- `rootfs`: a machine's private root (overlayfs over the host's `/`) and its
  PATH stand-ins (kubeadm/kubelet -> the node agent, systemctl, no-egress curl);
- `runner`: `Machines`, booting and killing machines as process trees.
"""

from gpuctl.sim.machines.runner import MachineError, Machines, find_node_agent, probe

__all__ = ["MachineError", "Machines", "find_node_agent", "probe"]
