package main

// `gpuctl-node-agent kubelet`: the kubelet's own command line (flag set,
// config file, drop-in directory, flag precedence and validation follow
// k8s.io/kubernetes/cmd/kubelet/app.NewKubeletCommand at v1.37.2, Apache
// License 2.0, The Kubernetes Authors), then the kubelet's own app.Run with
// kubemark's hollow dependencies (k8s.io/kubernetes/pkg/kubemark): app.Run
// does the TLS bootstrap and client-certificate rotation
// (pkg/kubelet/certificate/bootstrap), registers the Node, heartbeats its
// Lease and runs pods against a fake CRI runtime.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	noopoteltrace "go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sys/unix"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"

	"k8s.io/apimachinery/pkg/util/validation/field"
	genericapiserver "k8s.io/apiserver/pkg/server"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/tools/record"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/component-base/version/verflag"
	nodeutil "k8s.io/component-helpers/node/util"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	fakeremote "k8s.io/cri-client/pkg/fake"
	"k8s.io/klog/v2"
	kubeletconfigv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/mount-utils"

	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
	"k8s.io/kubernetes/pkg/kubelet"
	kubeletconfiginternal "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletconfigv1beta1conversion "k8s.io/kubernetes/pkg/kubelet/apis/config/v1beta1"
	kubeletconfigvalidation "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	containertest "k8s.io/kubernetes/pkg/kubelet/container/testing"
	"k8s.io/kubernetes/pkg/kubelet/eviction"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	probetest "k8s.io/kubernetes/pkg/kubelet/prober/testing"
	kubeletutil "k8s.io/kubernetes/pkg/kubelet/util"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"
	"k8s.io/kubernetes/pkg/util/oom"
	"k8s.io/kubernetes/pkg/volume"
	"k8s.io/kubernetes/pkg/volume/configmap"
	"k8s.io/kubernetes/pkg/volume/csi"
	"k8s.io/kubernetes/pkg/volume/downwardapi"
	"k8s.io/kubernetes/pkg/volume/emptydir"
	"k8s.io/kubernetes/pkg/volume/fc"
	"k8s.io/kubernetes/pkg/volume/git_repo"
	"k8s.io/kubernetes/pkg/volume/hostpath"
	"k8s.io/kubernetes/pkg/volume/iscsi"
	"k8s.io/kubernetes/pkg/volume/local"
	"k8s.io/kubernetes/pkg/volume/nfs"
	"k8s.io/kubernetes/pkg/volume/projected"
	"k8s.io/kubernetes/pkg/volume/secret"
	"k8s.io/kubernetes/pkg/volume/util/hostutil"
	"k8s.io/kubernetes/pkg/volume/util/subpath"
)

const componentKubelet = "kubelet"

func kubeletMain(args []string) int {
	cmd := newKubeletCommand()
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

func newKubeletCommand() *cobra.Command {
	cleanFlagSet := pflag.NewFlagSet(componentKubelet, pflag.ContinueOnError)
	cleanFlagSet.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	kubeletFlags := options.NewKubeletFlags()
	kubeletConfig, err := options.NewKubeletConfiguration()
	if err != nil {
		panic(err) // programmer error, as upstream
	}

	cmd := &cobra.Command{
		Use: componentKubelet,
		Long: `The kubelet of a simulated gpuctl machine: the real kubelet with kubemark's
hollow runtime (fake CRI, fake cAdvisor sized from /etc/gpuctl-sim/hardware.json)
and an in-process GPU device plugin (nvidia.com/gpu, or amd.com/gpu when the hardware
file's gpuResource says so). It serves no TCP port.`,
		DisableFlagParsing: true,
		SilenceUsage:       true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cleanFlagSet.Parse(args); err != nil {
				return fmt.Errorf("failed to parse kubelet flag: %w", err)
			}
			if cmds := cleanFlagSet.Args(); len(cmds) > 0 {
				return fmt.Errorf("unknown command %+s", cmds[0])
			}
			if help, _ := cleanFlagSet.GetBool("help"); help {
				return cmd.Help()
			}
			verflag.PrintAndExitIfRequested()

			if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(kubeletConfig.FeatureGates); err != nil {
				return fmt.Errorf("failed to set feature gates from initial flags-based config: %w", err)
			}
			if err := options.ValidateKubeletFlags(kubeletFlags); err != nil {
				return fmt.Errorf("failed to validate kubelet flags: %w", err)
			}
			if len(kubeletFlags.KubeletConfigFile) > 0 {
				kubeletConfig, err = loadConfigFile(cmd.Context(), kubeletFlags.KubeletConfigFile)
				if err != nil {
					return fmt.Errorf("failed to load kubelet config file, path: %s, error: %w", kubeletFlags.KubeletConfigFile, err)
				}
			}
			if len(kubeletFlags.KubeletDropinConfigDirectory) > 0 {
				if err := mergeKubeletConfigurations(kubeletConfig, kubeletFlags.KubeletDropinConfigDirectory); err != nil {
					return fmt.Errorf("failed to merge kubelet configs: %w", err)
				}
			}
			if len(kubeletFlags.KubeletConfigFile) > 0 || len(kubeletFlags.KubeletDropinConfigDirectory) > 0 {
				if err := kubeletConfigFlagPrecedence(kubeletConfig, args); err != nil {
					return fmt.Errorf("failed to precedence kubeletConfigFlag: %w", err)
				}
				if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(kubeletConfig.FeatureGates); err != nil {
					return fmt.Errorf("failed to set feature gates from initial flags-based config: %w", err)
				}
			}

			logs.InitLogs()
			if err := logsapi.ValidateAndApplyAsField(&kubeletConfig.Logging, utilfeature.DefaultFeatureGate, field.NewPath("logging")); err != nil {
				return fmt.Errorf("initialize logging: %v", err)
			}
			cliflag.PrintFlags(cleanFlagSet)

			// gpuctl: a simulated machine has no host parts to check or tune.
			makeHollow(kubeletConfig)
			if err := kubeletconfigvalidation.ValidateKubeletConfiguration(kubeletConfig, utilfeature.DefaultFeatureGate); err != nil {
				return fmt.Errorf("failed to validate kubelet configuration, error: %w, path: %s", err, kubeletConfig)
			}

			s := &options.KubeletServer{KubeletFlags: *kubeletFlags, KubeletConfiguration: *kubeletConfig}
			ctx := genericapiserver.SetupSignalContext()
			utilfeature.DefaultMutableFeatureGate.AddMetrics()
			return runHollowKubelet(ctx, s)
		},
	}

	kubeletFlags.AddFlags(cleanFlagSet)
	options.AddKubeletConfigFlags(cleanFlagSet, kubeletConfig)
	options.AddGlobalFlags(cleanFlagSet)
	cleanFlagSet.BoolP("help", "h", false, fmt.Sprintf("help for %s", cmd.Name()))

	const usageFmt = "Usage:\n  %s\n\nFlags:\n%s"
	cmd.SetUsageFunc(func(cmd *cobra.Command) error {
		fmt.Fprintf(cmd.OutOrStderr(), usageFmt, cmd.UseLine(), cleanFlagSet.FlagUsagesWrapped(2))
		return nil
	})
	cmd.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		fmt.Fprintf(cmd.OutOrStdout(), "%s\n\n"+usageFmt, cmd.Long, cmd.UseLine(), cleanFlagSet.FlagUsagesWrapped(2))
	})
	return cmd
}

// runHollowKubelet makes the configured kubelet hollow and runs it.
func runHollowKubelet(ctx context.Context, s *options.KubeletServer) error {
	logger := klog.FromContext(ctx)
	hw, err := loadHardware(hardwareFile())
	if err != nil {
		return err
	}
	nodeName, err := nodeutil.GetHostname(s.HostnameOverride)
	if err != nil {
		return err
	}
	logger.Info("Hollow kubelet (gpuctl-node-agent)", "node", nodeName, "cpus", hw.CPUs, "memoryGiB", hw.MemoryGiB,
		"gpus", hw.GPUs, "gpuResource", hw.GPUResource, "gpuProduct", hw.GPUProduct, "hardwareFile", hardwareFile())

	// The machine's container runtime: kubemark's fake CRI server, on a unix
	// socket of its own, spoken to over the real CRI client.
	if err := os.MkdirAll(s.RootDirectory, 0o750); err != nil {
		return err
	}
	criSocket := filepath.Join(s.RootDirectory, "gpuctl-fake-cri.sock")
	if err := os.Remove(criSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fakeCRI := fakeremote.NewFakeRemoteRuntime()
	if err := fakeCRI.Start("unix://" + criSocket); err != nil {
		return fmt.Errorf("failed to start the fake container runtime: %w", err)
	}
	defer fakeCRI.Stop()
	fakeCRI.ImageService.SetFakeImageSize(123 << 20) // the kubelet rejects images without a size
	// Image and container filesystems, on the hollow cAdvisor's one disk (the
	// eviction manager and image GC ask the CRI where they are).
	fsUsage := func() []*runtimeapi.FilesystemUsage {
		return []*runtimeapi.FilesystemUsage{{
			Timestamp:  time.Now().UnixNano(),
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: "/var/lib/containerd"},
			UsedBytes:  &runtimeapi.UInt64Value{Value: 1 << 30},
			InodesUsed: &runtimeapi.UInt64Value{Value: 10000},
		}}
	}
	fakeCRI.ImageService.SetFakeFilesystemUsage(fsUsage())
	fakeCRI.ImageService.SetFakeContainerFilesystemUsage(fsUsage())
	go forgetCRICalls(ctx, fakeCRI)
	logger.Info("Fake container runtime", "endpoint", "unix://"+criSocket, "replaces", s.ContainerRuntimeEndpoint)
	s.ContainerRuntimeEndpoint = "unix://" + criSocket
	s.ImageServiceEndpoint = "unix://" + criSocket

	// The kubelet package's postinst creates the static pod directory.
	if s.StaticPodPath != "" {
		if err := os.MkdirAll(s.StaticPodPath, 0o755); err != nil {
			return err
		}
	}

	cadvisor := newHollowCadvisor(nodeName, hw)
	containerManager, err := newHollowContainerManager(logger, cadvisor, s)
	if err != nil {
		return err
	}
	if hw.GPUs > 0 {
		go newGPUDevicePlugin(nodeName, hw).run(ctx)
	}

	deps := &kubelet.Dependencies{
		// KubeClient, HeartbeatClient and EventClient stay nil: app.Run builds
		// them, after the TLS bootstrap, exactly as for a stock kubelet.
		CAdvisorInterface: cadvisor,
		ContainerManager:  containerManager,
		ProbeManager:      probetest.FakeManager{},
		// Hollow containers write no logs: every log file is there and empty.
		OSInterface:               &containertest.FakeOS{StatFn: emptyFile},
		VolumePlugins:             volumePlugins(),
		OOMAdjuster:               oom.NewFakeOOMAdjuster(),
		Mounter:                   &mount.FakeMounter{},
		Subpather:                 &subpath.FakeSubpath{},
		HostUtil:                  hostutil.NewFakeHostUtil(nil),
		PodStartupLatencyTracker:  kubeletutil.NewPodStartupLatencyTracker(),
		NodeStartupLatencyTracker: kubeletutil.NewNodeStartupLatencyTracker(logger),
		TracerProvider:            noopoteltrace.NewTracerProvider(),
		// As kubemark: a real recorder would make the kubelet read the host's /dev/kmsg.
		Recorder: &record.FakeRecorder{},
	}
	return kubeletapp.Run(ctx, s, deps, utilfeature.DefaultFeatureGate)
}

// makeHollow turns off what touches the host: no TCP port (many machines share
// the host's network), no cgroups, kernel tunables, swap or cgroup-version
// checks (the machine is simulated; its size is the hardware file).
func makeHollow(kc *kubeletconfiginternal.KubeletConfiguration) {
	kc.EnableServer = false
	kc.ReadOnlyPort = 0
	kc.HealthzPort = 0
	kc.CgroupsPerQOS = false
	kc.CgroupRoot = ""
	kc.KubeletCgroups = ""
	kc.SystemCgroups = ""
	kc.KubeReservedCgroup = ""
	kc.SystemReservedCgroup = ""
	kc.EnforceNodeAllocatable = nil
	kc.ProtectKernelDefaults = false
	kc.FailSwapOn = false
	kc.FailCgroupV1 = false
	// Raising the open-file limit past its hard limit needs CAP_SYS_RESOURCE.
	var nofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err == nil && uint64(kc.MaxOpenFiles) > nofile.Max {
		kc.MaxOpenFiles = int64(nofile.Max)
	}
}

// emptyFile is the hollow machine's os.Stat: an empty regular file.
func emptyFile(path string) (os.FileInfo, error) {
	return fakeFileInfo{name: filepath.Base(path)}, nil
}

type fakeFileInfo struct{ name string }

func (f fakeFileInfo) Name() string       { return f.name }
func (f fakeFileInfo) Size() int64        { return 0 }
func (f fakeFileInfo) Mode() os.FileMode  { return 0o640 }
func (f fakeFileInfo) ModTime() time.Time { return time.Time{} }
func (f fakeFileInfo) IsDir() bool        { return false }
func (f fakeFileInfo) Sys() any           { return nil }

// forgetCRICalls empties the fake runtime's call journals, which would
// otherwise grow with every CRI call for the life of the machine.
func forgetCRICalls(ctx context.Context, f *fakeremote.RemoteRuntime) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.RuntimeService.Lock()
		f.RuntimeService.Called = f.RuntimeService.Called[:0]
		f.RuntimeService.Unlock()
		f.ImageService.Lock()
		f.ImageService.Called = f.ImageService.Called[:0]
		f.ImageService.Unlock()
	}
}

// volumePlugins is kubemark's volume plugin set (pkg/kubemark/hollow_kubelet.go).
func volumePlugins() []volume.VolumePlugin {
	var all []volume.VolumePlugin
	all = append(all, emptydir.ProbeVolumePlugins()...)
	all = append(all, git_repo.ProbeVolumePlugins()...)
	all = append(all, hostpath.FakeProbeVolumePlugins(volume.VolumeConfig{})...)
	all = append(all, nfs.ProbeVolumePlugins(volume.VolumeConfig{})...)
	all = append(all, secret.ProbeVolumePlugins()...)
	all = append(all, iscsi.ProbeVolumePlugins()...)
	all = append(all, downwardapi.ProbeVolumePlugins()...)
	all = append(all, fc.ProbeVolumePlugins()...)
	all = append(all, configmap.ProbeVolumePlugins()...)
	all = append(all, projected.ProbeVolumePlugins()...)
	all = append(all, local.ProbeVolumePlugins()...)
	all = append(all, csi.ProbeVolumePlugins()...)
	return all
}

// loadConfigFile is cmd/kubelet/app's loadConfigFile.
func loadConfigFile(ctx context.Context, name string) (*kubeletconfiginternal.KubeletConfiguration, error) {
	const errFmt = "failed to load Kubelet config file %s, error %v"
	kubeletConfigFile, err := filepath.Abs(name)
	if err != nil {
		return nil, fmt.Errorf(errFmt, name, err)
	}
	loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, kubeletConfigFile)
	if err != nil {
		return nil, fmt.Errorf(errFmt, name, err)
	}
	kc, err := loader.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf(errFmt, name, err)
	}
	if kc.EvictionHard == nil {
		kc.EvictionHard = eviction.DefaultEvictionHard
	} else if kc.MergeDefaultEvictionSettings {
		for k, v := range eviction.DefaultEvictionHard {
			if _, exists := kc.EvictionHard[k]; !exists {
				kc.EvictionHard[k] = v
			}
		}
	}
	return kc, nil
}

// mergeKubeletConfigurations is cmd/kubelet/app's drop-in merge (--config-dir).
func mergeKubeletConfigurations(kubeletConfig *kubeletconfiginternal.KubeletConfiguration, dir string) error {
	versioned := &kubeletconfigv1beta1.KubeletConfiguration{}
	if err := kubeletconfigv1beta1conversion.Convert_config_KubeletConfiguration_To_v1beta1_KubeletConfiguration(kubeletConfig, versioned, nil); err != nil {
		return err
	}
	base, err := json.Marshal(versioned)
	if err != nil {
		return fmt.Errorf("failed to marshal base config: %w", err)
	}
	err = filepath.WalkDir(dir, func(path string, info fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() || filepath.Ext(info.Name()) != ".conf" {
			return nil
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return err
		}
		loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, abs)
		if err != nil {
			return err
		}
		dropin, gvk, err := loader.LoadIntoJSON()
		if err != nil {
			return fmt.Errorf("failed to load kubelet dropin file, path: %s, error: %w", path, err)
		}
		if gvk == nil || gvk.Empty() {
			return fmt.Errorf("failed to load kubelet dropin file, path: %s, no apiVersion/kind", path)
		}
		if *gvk != kubeletconfigv1beta1.SchemeGroupVersion.WithKind("KubeletConfiguration") {
			return fmt.Errorf("failed to load kubelet dropin file, path: %s, unknown apiVersion/kind: %v", path, gvk.String())
		}
		merged, err := jsonpatch.MergePatch(base, dropin)
		if err != nil {
			return fmt.Errorf("failed to merge drop-in and current config: %w", err)
		}
		base = merged
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to walk through kubelet dropin directory %q: %w", dir, err)
	}
	versioned = &kubeletconfigv1beta1.KubeletConfiguration{}
	if err := json.Unmarshal(base, versioned); err != nil {
		return fmt.Errorf("failed to unmarshal merged JSON into kubelet configuration: %w", err)
	}
	kubeletconfigv1beta1conversion.SetDefaults_KubeletConfiguration(versioned)
	return kubeletconfigv1beta1conversion.Convert_v1beta1_KubeletConfiguration_To_config_KubeletConfiguration(versioned, kubeletConfig, nil)
}

// kubeletConfigFlagPrecedence is cmd/kubelet/app's: flags win over the config file.
func kubeletConfigFlagPrecedence(kc *kubeletconfiginternal.KubeletConfiguration, args []string) error {
	global := pflag.NewFlagSet("", pflag.ExitOnError)
	global.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	options.AddGlobalFlags(global)
	fs := pflag.NewFlagSet("", pflag.ExitOnError)
	fs.SetNormalizeFunc(global.GetNormalizeFunc())
	global.VisitAll(func(f *pflag.Flag) {
		fs.VarP(cliflag.NoOp{}, f.Name, f.Shorthand, f.Usage)
	})
	options.NewKubeletFlags().AddFlags(fs)
	options.AddKubeletConfigFlags(fs, kc)
	original := kc.FeatureGates
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return err
	}
	for k, v := range original {
		if _, ok := kc.FeatureGates[k]; !ok {
			kc.FeatureGates[k] = v
		}
	}
	return nil
}
