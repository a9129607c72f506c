// Command gpuctl-node-agent is the Kubernetes software of a simulated GPU
// machine: the machine's `kubeadm` (join only) and its `kubelet`.
//
//	gpuctl-node-agent kubeadm join HOST:PORT --token T --discovery-token-ca-cert-hash sha256:H [...]
//	gpuctl-node-agent kubelet <kubelet flags>
//	gpuctl-node-agent version
//
// `kubeadm join` is kubeadm's own token discovery, configuration download and
// kubelet-start steps (k8s.io/kubernetes/cmd/kubeadm/app), then it starts the
// kubelet the way systemd does with kubeadm's drop-in and waits for its TLS
// bootstrap. `kubelet` is the real kubelet (k8s.io/kubernetes/cmd/kubelet/app)
// with kubemark's hollow parts: a fake CRI runtime, a fake cAdvisor sized from
// /etc/gpuctl-sim/hardware.json and a stub container manager whose device
// methods are a real device manager, fed by an in-process NVIDIA-like device
// plugin over the device-plugin API v1beta1. It opens no TCP port.
//
// Invoked through a link or wrapper named `kubeadm` or `kubelet`, it behaves
// as that command.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/component-base/version"
)

const usage = `gpuctl-node-agent: the Kubernetes software of a simulated GPU machine

Usage:
  gpuctl-node-agent kubeadm join HOST:PORT --token TOKEN --discovery-token-ca-cert-hash sha256:HASH [flags]
  gpuctl-node-agent kubelet [kubelet flags]
  gpuctl-node-agent version
`

func main() {
	os.Exit(run(os.Args))
}

func run(argv []string) int {
	args := argv[1:]
	switch filepath.Base(argv[0]) {
	case "kubeadm", "kubelet":
		args = append([]string{filepath.Base(argv[0])}, args...)
	}
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 1
	}
	switch args[0] {
	case "kubeadm":
		return kubeadmMain(args[1:])
	case "kubelet":
		return kubeletMain(args[1:])
	case "version", "--version":
		fmt.Printf("Kubernetes %s\n", version.Get().GitVersion)
		return 0
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "gpuctl-node-agent: unknown command %q\n\n%s", args[0], usage)
		return 1
	}
}
