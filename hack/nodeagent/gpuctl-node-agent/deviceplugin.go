package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// gpuDevicePlugin is an in-process device plugin speaking the kubelet's
// device-plugin API v1beta1 the way the vendor's k8s-device-plugin does: it
// serves DevicePlugin on a socket in /var/lib/kubelet/device-plugins/,
// registers the machine's GPU resource (nvidia.com/gpu as NVIDIA's plugin,
// amd.com/gpu as ROCm's) on kubelet.sock, streams its devices with
// ListAndWatch, and answers Allocate (NVIDIA_VISIBLE_DEVICES for NVIDIA
// GPUs; ROCm's plugin hands over /dev/kfd and /dev/dri nodes instead, which a
// machine without GPUs does not have, so AMD allocations carry none). It
// registers again whenever the kubelet's registration socket is re-created
// or its own socket is removed (the device manager empties the directory
// when it starts).
type gpuDevicePlugin struct {
	pluginapi.UnimplementedDevicePluginServer
	dir      string
	resource string
	product  string
	devices  []*pluginapi.Device
}

func newGPUDevicePlugin(nodeName string, hw hardware) *gpuDevicePlugin {
	p := &gpuDevicePlugin{dir: pluginapi.DevicePluginPath, resource: hw.GPUResource, product: hw.GPUProduct}
	for i := 0; i < hw.GPUs; i++ {
		sum := sha256.Sum256([]byte(fmt.Sprintf("gpuctl-sim/%s/gpu/%d", nodeName, i)))
		id := fmt.Sprintf("GPU-%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
		p.devices = append(p.devices, &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
	}
	return p
}

func (p *gpuDevicePlugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *gpuDevicePlugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	<-stream.Context().Done() // simulated GPUs never change health
	return nil
}

func (p *gpuDevicePlugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	known := map[string]bool{}
	for _, d := range p.devices {
		known[d.ID] = true
	}
	resp := &pluginapi.AllocateResponse{}
	for _, creq := range req.ContainerRequests {
		for _, id := range creq.DevicesIds {
			if !known[id] {
				return nil, fmt.Errorf("unknown device %q", id)
			}
		}
		envs := map[string]string{}
		if p.resource == nvidiaGPU {
			envs["NVIDIA_VISIBLE_DEVICES"] = strings.Join(creq.DevicesIds, ",")
		}
		if p.product != "" {
			envs["GPUCTL_SIM_GPU_PRODUCT"] = p.product
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{Envs: envs})
	}
	return resp, nil
}

func (p *gpuDevicePlugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// socket is the plugin's socket name: gpuctl-nvidia-gpu.sock, gpuctl-amd-gpu.sock.
func (p *gpuDevicePlugin) socket() string {
	vendor, _, _ := strings.Cut(p.resource, ".")
	return "gpuctl-" + vendor + "-gpu.sock"
}

// run serves and registers until ctx ends.
func (p *gpuDevicePlugin) run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("gpu-device-plugin")
	kubeletSock := filepath.Join(p.dir, filepath.Base(pluginapi.KubeletSocket))
	ownSock := filepath.Join(p.dir, p.socket())
	var (
		server       *grpc.Server
		registeredTo uint64 // inode of the kubelet.sock registered with
	)
	stop := func() {
		if server != nil {
			server.Stop()
			server = nil
		}
		registeredTo = 0
	}
	defer stop()
	for {
		kubeletIno, kubeletUp := socketInode(kubeletSock)
		_, ownUp := socketInode(ownSock)
		if registeredTo != 0 && (!ownUp || !kubeletUp || kubeletIno != registeredTo) {
			logger.Info("Kubelet registration socket or plugin socket changed; registering again")
			stop()
		}
		if registeredTo == 0 && kubeletUp {
			var err error
			server, err = p.serve(ownSock)
			if err == nil {
				err = p.register(ctx, kubeletSock)
			}
			if err != nil {
				logger.V(2).Info("Device plugin not registered yet", "err", err)
				stop()
			} else {
				registeredTo = kubeletIno
				logger.Info("Registered with the kubelet", "resource", p.resource, "devices", len(p.devices), "socket", ownSock)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (p *gpuDevicePlugin) serve(sock string) (*grpc.Server, error) {
	if err := os.MkdirAll(filepath.Dir(sock), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	s := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(s, p)
	go func() { _ = s.Serve(ln) }()
	return s, nil
}

func (p *gpuDevicePlugin) register(ctx context.Context, kubeletSock string) error {
	conn, err := grpc.NewClient("unix://"+kubeletSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     p.socket(),
		ResourceName: p.resource,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	return err
}

// socketInode returns the inode of a unix socket file, if there is one.
func socketInode(path string) (uint64, bool) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ino, true
}
