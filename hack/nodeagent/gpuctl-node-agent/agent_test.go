package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
)

func TestReadEnvironmentFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	content := "# kubeadm\n" +
		`KUBELET_KUBEADM_ARGS="--hostname-override=m1 --node-ip=\"10.0.0.1\""` + "\n" +
		"; comment\n\n" +
		"KUBELET_EXTRA_ARGS=--node-labels=a=b,c=d --register-with-taints=\n" +
		"QUOTED='x y'\n" +
		"CONT=a \\\nb\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readEnvironmentFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"KUBELET_KUBEADM_ARGS": `--hostname-override=m1 --node-ip="10.0.0.1"`,
		"KUBELET_EXTRA_ARGS":   "--node-labels=a=b,c=d --register-with-taints=",
		"QUOTED":               "x y",
		"CONT":                 "a b",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v, want %#v", got, want)
	}
}

func TestExpandExecStart(t *testing.T) {
	env := map[string]string{"A": "--a=1  --b=2", "EMPTY": ""}
	got := expandExecStart([]string{"$A", "$EMPTY", "$MISSING", "--c"}, env)
	if want := []string{"--a=1", "--b=2", "--c"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestLoadHardware(t *testing.T) {
	dir := t.TempDir()
	hw, err := loadHardware(filepath.Join(dir, "missing.json"))
	if err != nil || hw != defaultHardware {
		t.Fatalf("missing file: %+v, %v", hw, err)
	}
	path := filepath.Join(dir, "hw.json")
	_ = os.WriteFile(path, []byte(`{"cpus": 26, "memoryGiB": 200, "gpus": 8, "gpuProduct": "NVIDIA-H100-80GB-HBM3"}`), 0o600)
	hw, err = loadHardware(path)
	want := hardware{CPUs: 26, MemoryGiB: 200, GPUs: 8, GPUProduct: "NVIDIA-H100-80GB-HBM3", DiskGiB: 100, GPUResource: "nvidia.com/gpu"}
	if err != nil || hw != want {
		t.Fatalf("got %+v, %v", hw, err)
	}
	_ = os.WriteFile(path, []byte(`{"cpus": 20, "memoryGiB": 240, "gpus": 1, "gpuProduct": "AMD-MI300X", "gpuResource": "amd.com/gpu"}`), 0o600)
	hw, err = loadHardware(path)
	if err != nil || hw.GPUResource != "amd.com/gpu" {
		t.Fatalf("amd: got %+v, %v", hw, err)
	}
	if p := newGPUDevicePlugin("n", hw); p.resource != "amd.com/gpu" || p.socket() != "gpuctl-amd-gpu.sock" {
		t.Fatalf("amd plugin: %q %q", p.resource, p.socket())
	}
	_ = os.WriteFile(path, []byte(`{"cpus": 1, "memoryGiB": 1, "gpuResource": "example.com/gpu"}`), 0o600)
	if _, err := loadHardware(path); err == nil {
		t.Fatal("unknown gpuResource accepted")
	}
	_ = os.WriteFile(path, []byte(`{"cpus": 0, "memoryGiB": 200}`), 0o600)
	if _, err := loadHardware(path); err == nil {
		t.Fatal("zero cpus accepted")
	}
}

func TestAllocatableReservation(t *testing.T) {
	s := &options.KubeletServer{}
	s.KubeReserved = map[string]string{"memory": "1Gi"}
	s.SystemReserved = map[string]string{"memory": "1Gi", "cpu": "500m"}
	s.EvictionHard = map[string]string{"memory.available": "100Mi", "nodefs.available": "10%"}
	capacity := v1.ResourceList{
		v1.ResourceMemory:           resource.MustParse("200Gi"),
		v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	got, err := allocatableReservation(s, capacity)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[v1.ResourceName]string{"memory": "2148Mi", "cpu": "500m", "ephemeral-storage": "10Gi"} {
		q := got[name]
		// percentages go through a float64, as in the kubelet
		w := resource.MustParse(want)
		if d := q.MilliValue() - w.MilliValue(); d < -1024000 || d > 1024000 {
			t.Errorf("%s: got %s, want %s", name, q.String(), want)
		}
	}
}

func TestGPUDevicePluginDevices(t *testing.T) {
	p := newGPUDevicePlugin("n1", hardware{GPUs: 8})
	q := newGPUDevicePlugin("n1", hardware{GPUs: 8})
	if len(p.devices) != 8 || !reflect.DeepEqual(p.devices, q.devices) {
		t.Fatalf("devices: %v", p.devices)
	}
	seen := map[string]bool{}
	for _, d := range p.devices {
		if seen[d.ID] {
			t.Fatalf("duplicate %s", d.ID)
		}
		seen[d.ID] = true
	}
}
