package main

// `gpuctl-node-agent kubeadm join`: the worker-node part of `kubeadm join`,
// built from kubeadm's own packages. The flag set, the option handling
// (newJoinOptions, addJoin*Flags, newJoinData) and the phase bodies follow
// k8s.io/kubernetes/cmd/kubeadm/app/cmd/join.go and cmd/phases/join at
// v1.37.2 (Apache License 2.0, The Kubernetes Authors); what differs is
// marked "gpuctl:".

import (
	"context"
	goflag "flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/lithammer/dedent"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	certutil "k8s.io/client-go/util/cert"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/version"
	"k8s.io/klog/v2"
	kubeletconfig "k8s.io/kubelet/config/v1beta1"

	kubeadmapi "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm"
	kubeadmscheme "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme"
	kubeadmapiv1 "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4"
	"k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/validation"
	"k8s.io/kubernetes/cmd/kubeadm/app/cmd/options"
	cmdutil "k8s.io/kubernetes/cmd/kubeadm/app/cmd/util"
	kubeadmconstants "k8s.io/kubernetes/cmd/kubeadm/app/constants"
	"k8s.io/kubernetes/cmd/kubeadm/app/discovery"
	kubeletphase "k8s.io/kubernetes/cmd/kubeadm/app/phases/kubelet"
	"k8s.io/kubernetes/cmd/kubeadm/app/preflight"
	configutil "k8s.io/kubernetes/cmd/kubeadm/app/util/config"
	kubeadmerrors "k8s.io/kubernetes/cmd/kubeadm/app/util/errors"
	kubeconfigutil "k8s.io/kubernetes/cmd/kubeadm/app/util/kubeconfig"
)

var joinWorkerNodeDoneMsg = dedent.Dedent(`
	This node has joined the cluster:
	* Certificate signing request was sent to apiserver and a response was received.
	* The Kubelet was informed of the new secure connection details.

	Run 'kubectl get nodes' on the control-plane to see this node join the cluster.

	`)

// kubeadmMain runs `kubeadm <args>`; only `join` and `version` exist.
func kubeadmMain(args []string) int {
	// As kubeadm's app.Run: only klog's -v and --vmodule are exposed.
	var klogFlags goflag.FlagSet
	klog.InitFlags(&klogFlags)
	klogFlags.VisitAll(func(f *goflag.Flag) {
		switch f.Name {
		case "v", "vmodule":
			goflag.CommandLine.Var(f.Value, f.Name, f.Usage)
		}
	})
	pflag.CommandLine.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	pflag.CommandLine.AddGoFlagSet(goflag.CommandLine)

	root := &cobra.Command{
		Use:           "kubeadm",
		Short:         "kubeadm (gpuctl-node-agent): join this simulated machine to a cluster",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.AddCommand(newCmdJoin(os.Stdout), newCmdVersion(os.Stdout))
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		kubeadmerrors.HandleError(err) // prints "error: ..." and exits 1, as kubeadm
	}
	return 0
}

func newCmdVersion(out io.Writer) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of kubeadm",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := version.Get()
			switch output {
			case "":
				fmt.Fprintf(out, "kubeadm version: %#v\n", v)
			case "short":
				fmt.Fprintf(out, "%s\n", v.GitVersion)
			default:
				return fmt.Errorf("invalid output format: %s", output)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "Output format; available options are 'short'")
	return cmd
}

// joinOptions are kubeadm join's flags (cmd/join.go).
type joinOptions struct {
	cfgPath               string
	token                 string
	controlPlane          bool
	ignorePreflightErrors []string
	externalcfg           *kubeadmapiv1.JoinConfiguration
	patchesDir            string
	dryRun                bool
	skipCRIDetect         bool
	skipPhases            []string
}

type joinData struct {
	cfg                   *kubeadmapi.JoinConfiguration
	initCfg               *kubeadmapi.InitConfiguration
	tlsBootstrapCfg       *clientcmdapi.Config
	ignorePreflightErrors sets.Set[string]
	patchesDir            string
	skipPhases            sets.Set[string]
	out                   io.Writer
}

func newCmdJoin(out io.Writer) *cobra.Command {
	opt := newJoinOptions()
	cmd := &cobra.Command{
		Use:   "join [api-server-endpoint]",
		Short: "Run this on any machine you wish to join an existing cluster",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := newJoinData(cmd, args, opt, out)
			if err != nil {
				return err
			}
			return runJoin(data)
		},
	}
	addJoinConfigFlags(cmd.Flags(), opt.externalcfg)
	addJoinOtherFlags(cmd.Flags(), opt)
	// Added by kubeadm's workflow runner (BindToCommand).
	cmd.Flags().StringSliceVar(&opt.skipPhases, "skip-phases", nil,
		"List of phases to be skipped (gpuctl-node-agent honours preflight)")
	return cmd
}

// addJoinConfigFlags adds join flags bound to the config to the specified flagset
func addJoinConfigFlags(flagSet *pflag.FlagSet, cfg *kubeadmapiv1.JoinConfiguration) {
	flagSet.StringVar(
		&cfg.NodeRegistration.Name, options.NodeName, cfg.NodeRegistration.Name,
		`Specify the node name.`,
	)
	flagSet.StringVar(
		&cfg.ControlPlane.CertificateKey, options.CertificateKey, cfg.ControlPlane.CertificateKey,
		"Use this key to decrypt the certificate secrets uploaded by init. The certificate key is a hex encoded string that is an AES key of size 32 bytes.",
	)
	flagSet.StringVar(
		&cfg.ControlPlane.LocalAPIEndpoint.AdvertiseAddress, options.APIServerAdvertiseAddress, cfg.ControlPlane.LocalAPIEndpoint.AdvertiseAddress,
		"If the node should host a new control plane instance, the IP address the API Server will advertise it's listening on. If not set the default network interface will be used.",
	)
	flagSet.Int32Var(
		&cfg.ControlPlane.LocalAPIEndpoint.BindPort, options.APIServerBindPort, cfg.ControlPlane.LocalAPIEndpoint.BindPort,
		"If the node should host a new control plane instance, the port for the API Server to bind to.",
	)
	flagSet.StringVar(
		&cfg.Discovery.BootstrapToken.Token, options.TokenDiscovery, "",
		"For token-based discovery, the token used to validate cluster information fetched from the API server.",
	)
	flagSet.StringSliceVar(
		&cfg.Discovery.BootstrapToken.CACertHashes, options.TokenDiscoveryCAHash, []string{},
		"For token-based discovery, validate that the root CA public key matches this hash (format: \"<type>:<value>\").",
	)
	flagSet.BoolVar(
		&cfg.Discovery.BootstrapToken.UnsafeSkipCAVerification, options.TokenDiscoverySkipCAHash, false,
		"For token-based discovery, allow joining without --discovery-token-ca-cert-hash pinning.",
	)
	flagSet.StringVar(
		&cfg.Discovery.File.KubeConfigPath, options.FileDiscovery, "",
		"For file-based discovery, a file or URL from which to load cluster information.",
	)
	flagSet.StringVar(
		&cfg.Discovery.TLSBootstrapToken, options.TLSBootstrapToken, cfg.Discovery.TLSBootstrapToken,
		`Specify the token used to temporarily authenticate with the Kubernetes Control Plane while joining the node.`,
	)
	cmdutil.AddCRISocketFlag(flagSet, &cfg.NodeRegistration.CRISocket)
}

// addJoinOtherFlags adds join flags that are not bound to a configuration file to the given flagset
func addJoinOtherFlags(flagSet *pflag.FlagSet, joinOptions *joinOptions) {
	options.AddConfigFlag(flagSet, &joinOptions.cfgPath)
	flagSet.StringSliceVar(
		&joinOptions.ignorePreflightErrors, options.IgnorePreflightErrors, joinOptions.ignorePreflightErrors,
		"A list of checks whose errors will be shown as warnings. Example: 'IsPrivilegedUser,Swap'. Value 'all' ignores errors from all checks.",
	)
	flagSet.StringVar(
		&joinOptions.token, options.TokenStr, "",
		"Use this token for both discovery-token and tls-bootstrap-token when those values are not provided.",
	)
	flagSet.BoolVar(
		&joinOptions.controlPlane, options.ControlPlane, joinOptions.controlPlane,
		"Create a new control plane instance on this node (not supported by gpuctl-node-agent)",
	)
	flagSet.BoolVar(
		&joinOptions.dryRun, options.DryRun, joinOptions.dryRun,
		"Don't apply any changes; just output what would be done (not supported by gpuctl-node-agent).",
	)
	options.AddPatchesFlag(flagSet, &joinOptions.patchesDir)
}

// newJoinOptions returns a struct ready for being used for creating cmd join flags.
func newJoinOptions() *joinOptions {
	externalcfg := &kubeadmapiv1.JoinConfiguration{}
	externalcfg.Discovery.File = &kubeadmapiv1.FileDiscovery{}
	externalcfg.Discovery.BootstrapToken = &kubeadmapiv1.BootstrapTokenDiscovery{}
	externalcfg.ControlPlane = &kubeadmapiv1.JoinControlPlane{}
	kubeadmscheme.Scheme.Default(externalcfg)
	return &joinOptions{externalcfg: externalcfg}
}

// newJoinData validates the options and builds the internal JoinConfiguration,
// as kubeadm's newJoinData does for a worker node.
func newJoinData(cmd *cobra.Command, args []string, opt *joinOptions, out io.Writer) (*joinData, error) {
	if err := validation.ValidateMixedArguments(cmd.Flags()); err != nil {
		return nil, err
	}
	// gpuctl: a simulated GPU machine is a worker; there is no control plane to host.
	if opt.controlPlane {
		return nil, fmt.Errorf("--%s is not supported: gpuctl-node-agent joins worker nodes only", options.ControlPlane)
	}
	if opt.dryRun {
		return nil, fmt.Errorf("--%s is not supported by gpuctl-node-agent", options.DryRun)
	}

	kubeadmscheme.Scheme.Default(opt.externalcfg)

	if len(opt.token) > 0 {
		if len(opt.externalcfg.Discovery.TLSBootstrapToken) == 0 {
			opt.externalcfg.Discovery.TLSBootstrapToken = opt.token
		}
		if len(opt.externalcfg.Discovery.BootstrapToken.Token) == 0 {
			opt.externalcfg.Discovery.BootstrapToken.Token = opt.token
		}
	}
	if len(opt.externalcfg.Discovery.File.KubeConfigPath) == 0 {
		opt.externalcfg.Discovery.File = nil
	}
	if len(args) == 0 {
		opt.externalcfg.Discovery.BootstrapToken = nil
	} else {
		opt.externalcfg.Discovery.BootstrapToken.APIServerEndpoint = args[0]
	}

	defaultJCP := &kubeadmapiv1.JoinControlPlane{}
	kubeadmapiv1.SetDefaults_JoinControlPlane(defaultJCP)
	if *opt.externalcfg.ControlPlane != *defaultJCP {
		klog.Warningf("[preflight] WARNING: --%s is also required when passing control-plane "+
			"related flags such as [%s]", options.ControlPlane,
			strings.Join([]string{options.CertificateKey, options.APIServerAdvertiseAddress, options.APIServerBindPort}, ", "))
	}
	opt.externalcfg.ControlPlane = nil

	if opt.externalcfg.NodeRegistration.Name == "" {
		klog.V(1).Infoln("[preflight] found NodeName empty; using OS hostname as NodeName")
	}

	cfg, err := configutil.LoadOrDefaultJoinConfiguration(opt.cfgPath, opt.externalcfg, configutil.LoadOrDefaultConfigurationOptions{
		SkipCRIDetect: opt.skipCRIDetect,
	})
	if err != nil {
		return nil, err
	}
	if cfg.ControlPlane != nil {
		return nil, fmt.Errorf("a JoinConfiguration with controlPlane is not supported: gpuctl-node-agent joins worker nodes only")
	}

	ignorePreflightErrorsSet, err := validation.ValidateIgnorePreflightErrors(opt.ignorePreflightErrors, cfg.NodeRegistration.IgnorePreflightErrors)
	if err != nil {
		return nil, err
	}
	cfg.NodeRegistration.IgnorePreflightErrors = sets.List(ignorePreflightErrorsSet)

	if opt.externalcfg.NodeRegistration.Name != "" {
		cfg.NodeRegistration.Name = opt.externalcfg.NodeRegistration.Name
	}
	if opt.externalcfg.NodeRegistration.CRISocket != "" {
		cfg.NodeRegistration.CRISocket = opt.externalcfg.NodeRegistration.CRISocket
	}

	skip := sets.New(opt.skipPhases...)
	if len(skip) == 0 {
		skip = sets.New(cfg.SkipPhases...)
	}
	return &joinData{
		cfg:                   cfg,
		ignorePreflightErrors: ignorePreflightErrorsSet,
		patchesDir:            opt.patchesDir,
		skipPhases:            skip,
		out:                   out,
	}, nil
}

func (j *joinData) InitCfg() (*kubeadmapi.InitConfiguration, error) {
	if j.initCfg != nil {
		return j.initCfg, nil
	}
	if j.tlsBootstrapCfg == nil {
		klog.V(1).Infoln("[preflight] Discovering cluster-info")
		cfg, err := discovery.For(nil, j.cfg)
		if err != nil {
			return nil, err
		}
		j.tlsBootstrapCfg = cfg
	}
	klog.V(1).Infoln("[preflight] Fetching init configuration")
	initCfg, err := fetchInitConfigurationFromJoinConfiguration(j.cfg, j.tlsBootstrapCfg)
	if err != nil {
		return nil, err
	}
	j.initCfg = initCfg
	return initCfg, nil
}

func fetchInitConfigurationFromJoinConfiguration(cfg *kubeadmapi.JoinConfiguration, tlsBootstrapCfg *clientcmdapi.Config) (*kubeadmapi.InitConfiguration, error) {
	klog.V(1).Infoln("[preflight] Retrieving KubeConfig objects")
	client, err := kubeconfigutil.ToClientSet(tlsBootstrapCfg)
	if err != nil {
		return nil, fmt.Errorf("unable to access the cluster: %w", err)
	}
	initConfiguration, err := configutil.FetchInitConfigurationFromCluster(client, nil, "preflight", false, false, true, false)
	if err != nil {
		return nil, fmt.Errorf("unable to fetch the kubeadm-config ConfigMap: %w", err)
	}
	_, clusterinfo, err := kubeconfigutil.GetClusterFromKubeConfig(tlsBootstrapCfg)
	if err != nil {
		return nil, fmt.Errorf("the TLS bootstrap kubeconfig is malformed: %w", err)
	}
	tlsBootstrapCfg.Clusters = map[string]*clientcmdapi.Cluster{
		initConfiguration.ClusterName: clusterinfo,
	}
	currentContext, ok := tlsBootstrapCfg.Contexts[tlsBootstrapCfg.CurrentContext]
	if !ok || currentContext == nil {
		return nil, fmt.Errorf("the TLS bootstrap kubeconfig is malformed: %q set as current-context, but not found in context list", tlsBootstrapCfg.CurrentContext)
	}
	currentContext.Cluster = initConfiguration.ClusterName
	initConfiguration.NodeRegistration = cfg.NodeRegistration
	return initConfiguration, nil
}

// runJoin runs kubeadm join's worker phases: preflight, kubelet-start,
// kubelet-wait-bootstrap.
func runJoin(j *joinData) error {
	phases := []struct {
		name string
		run  func(*joinData) error
	}{
		{"preflight", runPreflight},
		{"kubelet-start", runKubeletStart},
		{"kubelet-wait-bootstrap", runKubeletWaitBootstrap},
	}
	for _, p := range phases {
		if p.name == "preflight" && j.skipPhases.Has(p.name) {
			// kubeadm still discovers the cluster in a later phase
			continue
		}
		if err := p.run(j); err != nil {
			return fmt.Errorf("error execution phase %s: %w", p.name, err)
		}
	}
	fmt.Fprint(j.out, joinWorkerNodeDoneMsg)
	return nil
}

// runPreflight runs kubeadm's join-node checks that mean something on a
// simulated machine. gpuctl: the checks of the host's hardware and software
// (container runtime, swap, kernel, cgroups, ip_forward, kubelet port) are
// left out: the machine's "hardware" is /etc/gpuctl-sim/hardware.json and its
// runtime is the agent's fake CRI.
func runPreflight(j *joinData) error {
	fmt.Println("[preflight] Running pre-flight checks")
	if err := preflight.RunRootCheckOnly(j.ignorePreflightErrors); err != nil {
		return err
	}
	checks := []preflight.Checker{
		preflight.FileAvailableCheck{Path: filepath.Join(kubeadmconstants.KubernetesDir, kubeadmconstants.KubeletKubeConfigFileName)},
		preflight.FileAvailableCheck{Path: filepath.Join(kubeadmconstants.KubernetesDir, kubeadmconstants.KubeletBootstrapKubeConfigFileName)},
		preflight.FileAvailableCheck{Path: j.cfg.CACertPath},
	}
	if j.cfg.Discovery.BootstrapToken != nil {
		if host, _, err := net.SplitHostPort(j.cfg.Discovery.BootstrapToken.APIServerEndpoint); err == nil {
			checks = append(checks, preflight.HTTPProxyCheck{Proto: "https", Host: host})
		}
	}
	if err := preflight.RunChecks(checks, os.Stderr, j.ignorePreflightErrors); err != nil {
		return err
	}
	_, err := j.InitCfg()
	return err
}

// runKubeletStart is kubeadm's runKubeletStartJoinPhase for a worker, with
// "systemctl start kubelet" done by startKubeletService.
func runKubeletStart(j *joinData) error {
	initCfg, err := j.InitCfg()
	if err != nil {
		return err
	}
	cfg := j.cfg
	tlsBootstrapCfg := j.tlsBootstrapCfg
	bootstrapKubeConfigFile := filepath.Join(kubeadmconstants.KubernetesDir, kubeadmconstants.KubeletBootstrapKubeConfigFileName)

	client, err := kubeconfigutil.ToClientSet(tlsBootstrapCfg)
	if err != nil {
		return fmt.Errorf("could not create client from bootstrap kubeconfig")
	}

	klog.V(1).Infof("[kubelet-start] writing bootstrap kubelet config file at %s", bootstrapKubeConfigFile)
	if err := kubeconfigutil.WriteToDisk(bootstrapKubeConfigFile, tlsBootstrapCfg); err != nil {
		return fmt.Errorf("couldn't save bootstrap-kubelet.conf to disk: %w", err)
	}

	cluster := tlsBootstrapCfg.Contexts[tlsBootstrapCfg.CurrentContext].Cluster
	if _, err := os.Stat(cfg.CACertPath); os.IsNotExist(err) {
		klog.V(1).Infof("[kubelet-start] writing CA certificate at %s", cfg.CACertPath)
		if err := certutil.WriteCert(cfg.CACertPath, tlsBootstrapCfg.Clusters[cluster].CertificateAuthorityData); err != nil {
			return fmt.Errorf("couldn't save the CA certificate to disk: %w", err)
		}
	}

	nodeName, _, err := kubeletphase.GetNodeNameAndHostname(&cfg.NodeRegistration)
	if err != nil {
		klog.Warning(err)
	}
	klog.V(1).Infof("[kubelet-start] Checking for an existing Node in the cluster with name %q and status %q", nodeName, v1.NodeReady)
	node, err := client.CoreV1().Nodes().Get(context.TODO(), nodeName, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("cannot get Node %q: %w", nodeName, err)
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == v1.NodeReady && cond.Status == v1.ConditionTrue {
			return fmt.Errorf("a Node with name %q and status %q already exists in the cluster. "+
				"You must delete the existing Node or change the name of this new joining Node", nodeName, v1.NodeReady)
		}
	}

	// gpuctl: kubeadm stops the kubelet service here; the machine has none running yet.

	kubeletConfig := &kubeletconfig.KubeletConfiguration{
		ContainerRuntimeEndpoint: cfg.NodeRegistration.CRISocket,
	}
	if err := kubeletphase.WriteInstanceConfigToDisk(kubeletConfig, kubeadmconstants.KubeletRunDirectory); err != nil {
		return fmt.Errorf("error writing instance kubelet configuration to disk: %w", err)
	}
	if err := kubeletphase.WriteConfigToDisk(&initCfg.ClusterConfiguration, kubeadmconstants.KubeletRunDirectory, j.patchesDir, j.out); err != nil {
		return err
	}
	if err := kubeletphase.WriteKubeletDynamicEnvFile(&initCfg.ClusterConfiguration, &initCfg.NodeRegistration, true, kubeadmconstants.KubeletRunDirectory); err != nil {
		return err
	}

	fmt.Println("[kubelet-start] Starting the kubelet")
	if err := startKubeletService(); err != nil {
		return fmt.Errorf("couldn't start the kubelet: %w", err)
	}
	return nil
}

// runKubeletWaitBootstrap waits for the kubelet's TLS bootstrap, as kubeadm's
// kubelet-wait-bootstrap phase. gpuctl: the kubelet serves no healthz port,
// so instead of polling it this fails early if the kubelet process exits.
func runKubeletWaitBootstrap(j *joinData) error {
	bootstrapKubeConfigFile := filepath.Join(kubeadmconstants.KubernetesDir, kubeadmconstants.KubeletBootstrapKubeConfigFileName)
	defer func() {
		_ = os.Remove(bootstrapKubeConfigFile)
	}()
	timeout := j.cfg.Timeouts.TLSBootstrap.Duration
	fmt.Println("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap")
	err := wait.PollUntilContextTimeout(context.Background(),
		kubeadmconstants.TLSBootstrapRetryInterval, timeout, true,
		func(_ context.Context) (bool, error) {
			if exited, err := kubeletExited(); exited {
				return false, fmt.Errorf("the kubelet exited (%v); see %s", err, kubeletLogPath)
			}
			_, err := kubeconfigutil.ClientSetFromFile(kubeadmconstants.GetKubeletKubeConfigPath())
			return err == nil, nil
		})
	if err != nil {
		return fmt.Errorf("failed while waiting for TLS bootstrap: %w", err)
	}
	// The kubelet keeps running after this process exits.
	return nil
}
