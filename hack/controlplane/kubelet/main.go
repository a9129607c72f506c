// Command kubelet is the stock upstream kubelet, built from the published
// k8s.io/kubernetes module. It needs a real container runtime (CRI); the
// simulated machines run gpuctl-node-agent (hack/nodeagent) instead.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	command := app.NewKubeletCommand(context.Background())
	code := cli.Run(command)
	os.Exit(code)
}
