package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	cadvisorapi "github.com/google/cadvisor/lib/model"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/klog/v2"
	cadvisortest "k8s.io/kubernetes/pkg/kubelet/cadvisor/testing"
)

// hardwarePath is the simulated machine's "hardware": written by the
// simulator into the machine's /etc before it boots. GPUCTL_SIM_HARDWARE
// overrides the path (for running the agent by hand).
const hardwarePath = "/etc/gpuctl-sim/hardware.json"

// hardware describes the simulated machine. Missing file: 4 CPUs, 16 GiB, no GPU.
type hardware struct {
	CPUs       int     `json:"cpus"`
	MemoryGiB  float64 `json:"memoryGiB"`
	GPUs       int     `json:"gpus"`
	GPUProduct string  `json:"gpuProduct"`
	// GPUResource is the extended resource the GPUs' device plugin registers:
	// nvidia.com/gpu (NVIDIA's k8s-device-plugin, the default) or amd.com/gpu
	// (ROCm's k8s-device-plugin).
	GPUResource string `json:"gpuResource"`
	// DiskGiB sizes the node's ephemeral-storage (default 100 GiB).
	DiskGiB float64 `json:"diskGiB"`
}

var defaultHardware = hardware{CPUs: 4, MemoryGiB: 16, GPUs: 0, DiskGiB: 100, GPUResource: nvidiaGPU}

// The GPU resources a device plugin of a real machine registers, by vendor.
const (
	nvidiaGPU = "nvidia.com/gpu"
	amdGPU    = "amd.com/gpu"
)

func hardwareFile() string {
	if p := os.Getenv("GPUCTL_SIM_HARDWARE"); p != "" {
		return p
	}
	return hardwarePath
}

func loadHardware(path string) (hardware, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return defaultHardware, nil
	}
	if err != nil {
		return hardware{}, err
	}
	hw := hardware{}
	if err := json.Unmarshal(data, &hw); err != nil {
		return hardware{}, fmt.Errorf("%s: %w", path, err)
	}
	if hw.CPUs <= 0 || hw.MemoryGiB <= 0 || hw.GPUs < 0 || hw.DiskGiB < 0 {
		return hardware{}, fmt.Errorf("%s: cpus and memoryGiB must be positive, gpus and diskGiB not negative: %s", path, strings.TrimSpace(string(data)))
	}
	if hw.DiskGiB == 0 {
		hw.DiskGiB = defaultHardware.DiskGiB
	}
	if hw.GPUResource == "" {
		hw.GPUResource = defaultHardware.GPUResource
	}
	if hw.GPUResource != nvidiaGPU && hw.GPUResource != amdGPU {
		return hardware{}, fmt.Errorf("%s: gpuResource must be %s or %s, not %q", path, nvidiaGPU, amdGPU, hw.GPUResource)
	}
	return hw, nil
}

const gib = 1 << 30

// hollowCadvisor is kubemark's fake cAdvisor with the machine's size.
type hollowCadvisor struct {
	cadvisortest.Fake
	machine cadvisorapi.MachineInfo
	version cadvisorapi.VersionInfo
	fs      cadvisorapi.FsInfo
	started time.Time
}

func newHollowCadvisor(nodeName string, hw hardware) *hollowCadvisor {
	mem := uint64(hw.MemoryGiB * gib)
	disk := uint64(hw.DiskGiB * gib)
	id := sha256.Sum256([]byte("gpuctl-sim/" + nodeName))
	inodes, inodesFree := uint64(disk/16384), uint64(disk/16384)*9/10
	return &hollowCadvisor{
		Fake:    cadvisortest.Fake{NodeName: nodeName},
		started: time.Now(),
		machine: cadvisorapi.MachineInfo{
			NumCores:         hw.CPUs,
			NumPhysicalCores: hw.CPUs,
			NumSockets:       1,
			MemoryCapacity:   mem,
			MachineID:        fmt.Sprintf("%x", id[:16]),
			SystemUUID:       fmt.Sprintf("%x-%x-%x-%x-%x", id[16:20], id[20:22], id[22:24], id[24:26], id[26:32]),
			BootID:           string(uuid.NewUUID()),
			InstanceID:       cadvisorapi.InstanceID(nodeName),
			Topology:         []cadvisorapi.Node{{Id: 0, Memory: mem}},
		},
		version: cadvisorapi.VersionInfo{
			KernelVersion:      kernelVersion(),
			ContainerOsVersion: osImage(),
		},
		fs: cadvisorapi.FsInfo{
			Device:     "/dev/sim0",
			Mountpoint: "/",
			Capacity:   disk,
			Available:  disk / 10 * 9,
			Usage:      disk / 10,
			Inodes:     &inodes,
			InodesFree: &inodesFree,
		},
	}
}

func (c *hollowCadvisor) MachineInfo(_ klog.Logger) (*cadvisorapi.MachineInfo, error) {
	m := c.machine
	m.Topology = append([]cadvisorapi.Node(nil), c.machine.Topology...)
	return &m, nil
}

func (c *hollowCadvisor) VersionInfo() (*cadvisorapi.VersionInfo, error) {
	v := c.version
	return &v, nil
}

func (c *hollowCadvisor) ImagesFsInfo(_ context.Context) (cadvisorapi.FsInfo, error) {
	return c.fs, nil
}

func (c *hollowCadvisor) RootFsInfo() (cadvisorapi.FsInfo, error) { return c.fs, nil }

func (c *hollowCadvisor) ContainerFsInfo(_ context.Context) (cadvisorapi.FsInfo, error) {
	return c.fs, nil
}

func (c *hollowCadvisor) GetDirFsInfo(string) (cadvisorapi.FsInfo, error) { return c.fs, nil }

func kernelVersion() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// osImage is the PRETTY_NAME of the machine's /etc/os-release.
func osImage() string {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return "Linux"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return "Linux"
}

// ContainerInfoV2 answers for the root cgroup only: an idle machine (about
// 2 % of its memory in use, a twentieth of a core busy), which the kubelet's
// summary API and eviction manager read.
func (c *hollowCadvisor) ContainerInfoV2(name string, _ cadvisorapi.RequestOptions) (map[string]cadvisorapi.ContainerInfo, error) {
	if name != "/" {
		return map[string]cadvisorapi.ContainerInfo{}, nil
	}
	now := time.Now()
	used := c.machine.MemoryCapacity / 50
	sample := func(t time.Time) *cadvisorapi.ContainerStats {
		busy := uint64(t.Sub(c.started).Nanoseconds()) / 20
		return &cadvisorapi.ContainerStats{
			Timestamp: t,
			Cpu:       &cadvisorapi.CpuStats{Usage: cadvisorapi.CpuUsage{Total: busy, User: busy / 2, System: busy / 2}},
			Memory:    &cadvisorapi.MemoryStats{Usage: used, WorkingSet: used, RSS: used},
		}
	}
	return map[string]cadvisorapi.ContainerInfo{"/": {
		ContainerReference: cadvisorapi.ContainerReference{Name: "/"},
		Spec: cadvisorapi.ContainerSpec{
			CreationTime: c.started,
			HasCpu:       true,
			HasMemory:    true,
			Memory:       cadvisorapi.MemorySpec{Limit: c.machine.MemoryCapacity},
		},
		Stats: []*cadvisorapi.ContainerStats{sample(now.Add(-10 * time.Second)), sample(now)},
	}}, nil
}
