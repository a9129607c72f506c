package main

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/server/healthz"
	internalapi "k8s.io/cri-api/pkg/apis"
	"k8s.io/klog/v2"
	pluginwatcherapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
	"k8s.io/kubernetes/pkg/kubelet/cm"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/resourceupdates"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"
	"k8s.io/kubernetes/pkg/kubelet/config"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
	"k8s.io/kubernetes/pkg/kubelet/eviction"
	evictionapi "k8s.io/kubernetes/pkg/kubelet/eviction/api"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"
	"k8s.io/kubernetes/pkg/kubelet/pluginmanager/cache"
	"k8s.io/kubernetes/pkg/kubelet/status"
	schedulerframework "k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/utils/ptr"
)

// hollowContainerManager is kubemark's stub container manager (no cgroups,
// no CPU or memory manager) whose device methods are the kubelet's real
// device manager, wired as pkg/kubelet/cm/container_manager_linux.go wires
// it: registration server on /var/lib/kubelet/device-plugins/kubelet.sock,
// plugin-watcher handler, capacity, admission-time Allocate through a
// topology manager (policy none), run options, checkpoint, health.
type hollowContainerManager struct {
	cm.ContainerManager
	deviceManager   devicemanager.Manager
	topologyManager topologymanager.Manager
	ephemeral       resource.Quantity
	reservation     v1.ResourceList
}

var _ cm.ContainerManager = &hollowContainerManager{}

func newHollowContainerManager(logger klog.Logger, c *hollowCadvisor, s *options.KubeletServer) (*hollowContainerManager, error) {
	mi, err := c.MachineInfo(logger)
	if err != nil {
		return nil, err
	}
	reservation, err := allocatableReservation(s, v1.ResourceList{
		v1.ResourceCPU:              *resource.NewQuantity(int64(mi.NumCores), resource.DecimalSI),
		v1.ResourceMemory:           *resource.NewQuantity(int64(mi.MemoryCapacity), resource.BinarySI),
		v1.ResourceEphemeralStorage: *resource.NewQuantity(int64(c.fs.Capacity), resource.BinarySI),
	})
	if err != nil {
		return nil, err
	}
	tm, err := topologymanager.NewManager(logger, mi.Topology, topologymanager.PolicyNone, topologymanager.ContainerTopologyScope, nil)
	if err != nil {
		return nil, err
	}
	dm, err := devicemanager.NewManagerImpl(logger, mi.Topology, tm)
	if err != nil {
		return nil, err
	}
	tm.AddHintProvider(logger, dm)
	return &hollowContainerManager{
		ContainerManager: cm.NewStubContainerManager(),
		deviceManager:    dm,
		topologyManager:  tm,
		ephemeral:        *resource.NewQuantity(int64(c.fs.Capacity), resource.BinarySI),
		reservation:      reservation,
	}, nil
}

// allocatableReservation is what the real container manager subtracts from
// capacity for Node allocatable: --kube-reserved, --system-reserved and the
// hard eviction thresholds (cm.GetNodeAllocatableReservation).
func allocatableReservation(s *options.KubeletServer, capacity v1.ResourceList) (v1.ResourceList, error) {
	out := v1.ResourceList{}
	for _, reserved := range []map[string]string{s.KubeReserved, s.SystemReserved} {
		for k, v := range reserved {
			q, err := resource.ParseQuantity(v)
			if err != nil {
				return nil, fmt.Errorf("reserved %s=%q: %w", k, v, err)
			}
			sum := out[v1.ResourceName(k)]
			sum.Add(q)
			out[v1.ResourceName(k)] = sum
		}
	}
	if s.ExperimentalNodeAllocatableIgnoreEvictionThreshold {
		return out, nil
	}
	thresholds, err := eviction.ParseThresholdConfig([]string{}, s.EvictionHard, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	for _, t := range thresholds {
		if t.Operator != evictionapi.OpLessThan {
			continue
		}
		var name v1.ResourceName
		switch t.Signal {
		case evictionapi.SignalMemoryAvailable:
			name = v1.ResourceMemory
		case evictionapi.SignalNodeFsAvailable:
			name = v1.ResourceEphemeralStorage
		default:
			continue
		}
		c := capacity[name]
		sum := out[name]
		sum.Add(*evictionapi.GetThresholdQuantity(t.Value, &c))
		out[name] = sum
	}
	return out, nil
}

func (m *hollowContainerManager) GetNodeAllocatableReservation() v1.ResourceList {
	return m.reservation.DeepCopy()
}

func (m *hollowContainerManager) Start(ctx context.Context, node *v1.Node, activePods cm.ActivePodsFunc, getNode cm.GetNodeFunc,
	sourcesReady config.SourcesReady, podStatusProvider status.PodStatusProvider, runtimeService internalapi.RuntimeService,
	localStorageCapacityIsolation bool) error {
	if err := m.ContainerManager.Start(ctx, node, activePods, getNode, sourcesReady, podStatusProvider, runtimeService, localStorageCapacityIsolation); err != nil {
		return err
	}
	// The fake runtime starts empty: no containers to re-admit.
	return m.deviceManager.Start(klog.FromContext(ctx), devicemanager.ActivePodsFunc(activePods), sourcesReady,
		containermap.NewContainerMap(), sets.New[string]())
}

func (m *hollowContainerManager) GetCapacity(_ klog.Logger, localStorageCapacityIsolation bool) v1.ResourceList {
	if !localStorageCapacityIsolation {
		return v1.ResourceList{}
	}
	return v1.ResourceList{v1.ResourceEphemeralStorage: m.ephemeral.DeepCopy()}
}

func (m *hollowContainerManager) GetPluginRegistrationHandlers() map[string]cache.PluginHandler {
	return map[string]cache.PluginHandler{pluginwatcherapi.DevicePlugin: m.deviceManager.GetWatcherHandler()}
}

func (m *hollowContainerManager) GetHealthCheckers() []healthz.HealthChecker {
	return []healthz.HealthChecker{m.deviceManager.GetHealthChecker()}
}

func (m *hollowContainerManager) GetDevicePluginResourceCapacity(logger klog.Logger) (v1.ResourceList, v1.ResourceList, []string) {
	return m.deviceManager.GetCapacity(logger)
}

func (m *hollowContainerManager) GetResources(ctx context.Context, pod *v1.Pod, container *v1.Container) (*kubecontainer.RunContainerOptions, error) {
	opts := &kubecontainer.RunContainerOptions{}
	devOpts, err := m.deviceManager.GetDeviceRunContainerOptions(ctx, pod, container)
	if err != nil || devOpts == nil {
		return opts, err
	}
	opts.Devices = append(opts.Devices, devOpts.Devices...)
	opts.Mounts = append(opts.Mounts, devOpts.Mounts...)
	opts.Envs = append(opts.Envs, devOpts.Envs...)
	opts.Annotations = append(opts.Annotations, devOpts.Annotations...)
	opts.CDIDevices = append(opts.CDIDevices, devOpts.CDIDevices...)
	return opts, nil
}

func (m *hollowContainerManager) UpdatePluginResources(node *schedulerframework.NodeInfo, attrs *lifecycle.PodAdmitAttributes) error {
	return m.deviceManager.UpdatePluginResources(node, attrs)
}

func (m *hollowContainerManager) GetAllocateResourcesPodAdmitHandler(_ klog.Logger) lifecycle.PodAdmitHandler {
	return m.topologyManager
}

func (m *hollowContainerManager) ShouldResetExtendedResourceCapacity() bool {
	return m.deviceManager.ShouldResetExtendedResourceCapacity()
}

func (m *hollowContainerManager) UpdateAllocatedDevices(logger klog.Logger) {
	m.deviceManager.UpdateAllocatedDevices(logger)
}

func (m *hollowContainerManager) UpdateAllocatedResourcesStatus(logger klog.Logger, pod *v1.Pod, status *v1.PodStatus) {
	m.deviceManager.UpdateAllocatedResourcesStatus(logger, pod, status)
}

func (m *hollowContainerManager) Updates() <-chan resourceupdates.Update {
	return m.deviceManager.Updates()
}

func (m *hollowContainerManager) GetDevices(podUID, containerName string) []*podresourcesapi.ContainerDevices {
	return containerDevices(m.deviceManager.GetDevices(podUID, containerName))
}

func (m *hollowContainerManager) GetAllocatableDevices(logger klog.Logger) []*podresourcesapi.ContainerDevices {
	return containerDevices(m.deviceManager.GetAllocatableDevices(logger))
}

// containerDevices is cm's containerDevicesFromResourceDeviceInstances.
func containerDevices(devs devicemanager.ResourceDeviceInstances) []*podresourcesapi.ContainerDevices {
	var out []*podresourcesapi.ContainerDevices
	for resourceName, resourceDevs := range devs {
		for devID, dev := range resourceDevs {
			topo := dev.GetTopology()
			if topo == nil {
				out = append(out, &podresourcesapi.ContainerDevices{ResourceName: resourceName, DeviceIds: []string{devID}})
				continue
			}
			for _, node := range topo.GetNodes() {
				out = append(out, &podresourcesapi.ContainerDevices{
					ResourceName: resourceName,
					DeviceIds:    []string{devID},
					Topology:     &podresourcesapi.TopologyInfo{Nodes: []*podresourcesapi.NUMANode{{ID: node.GetID()}}},
				})
			}
		}
	}
	return out
}

// InternalContainerLifecycle is the stub's (fake CPU and memory managers)
// plus what the real one does with the topology manager: track containers so
// that the hints stored at admission are dropped when a container stops.
func (m *hollowContainerManager) InternalContainerLifecycle(logger klog.Logger) cm.InternalContainerLifecycle {
	return &hollowContainerLifecycle{InternalContainerLifecycle: m.ContainerManager.InternalContainerLifecycle(logger), tm: m.topologyManager}
}

type hollowContainerLifecycle struct {
	cm.InternalContainerLifecycle
	tm topologymanager.Manager
}

func (l *hollowContainerLifecycle) PreStartContainer(logger klog.Logger, pod *v1.Pod, container *v1.Container, containerID string) error {
	if err := l.InternalContainerLifecycle.PreStartContainer(logger, pod, container, containerID); err != nil {
		return err
	}
	l.tm.AddContainer(logger, pod, container, containerID)
	return nil
}

func (l *hollowContainerLifecycle) PostStopContainer(logger klog.Logger, containerID string) error {
	_ = l.InternalContainerLifecycle.PostStopContainer(logger, containerID)
	return l.tm.RemoveContainer(logger, containerID)
}

// GetPodCgroupRoot is "/", as for a real kubelet without cgroups per QoS: the
// summary API's "pods" system container (and the eviction manager's
// allocatableMemory.available signal) are then the hollow root cgroup.
func (m *hollowContainerManager) GetPodCgroupRoot() string { return "/" }

// NewPodContainerManager is the stub's, except that a pod's "cgroup" reads
// back what its spec would have set (the kubelet reports it in pod status).
func (m *hollowContainerManager) NewPodContainerManager() cm.PodContainerManager {
	return hollowPodContainerManager{m.ContainerManager.NewPodContainerManager()}
}

type hollowPodContainerManager struct{ cm.PodContainerManager }

func (hollowPodContainerManager) GetPodCgroupConfig(pod *v1.Pod, _ v1.ResourceName) (*cm.ResourceConfig, error) {
	const period = 100000 // the kernel's default CFS period, in µs
	rc := cm.ResourceConfigForPod(pod, true, period, false, "")
	// Reading a real cgroup always yields every value (unlimited: quota -1, memory 0).
	if rc.CPUShares == nil {
		rc.CPUShares = ptr.To[uint64](cm.MinShares)
	}
	if rc.CPUQuota == nil {
		rc.CPUQuota = ptr.To[int64](-1)
	}
	if rc.CPUPeriod == nil {
		rc.CPUPeriod = ptr.To[uint64](period)
	}
	if rc.Memory == nil {
		rc.Memory = ptr.To[int64](0)
	}
	return rc, nil
}
