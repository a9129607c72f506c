package main

// "systemctl start kubelet" for a machine without systemd: the agent starts
// itself as the kubelet with the arguments kubeadm's systemd drop-in
// (10-kubeadm.conf, shipped in the kubeadm package) gives it:
//
//	Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
//	Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
//	EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
//	EnvironmentFile=-/etc/default/kubelet
//	ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
//
// The kubelet stays in the agent's process group (systemd would give it its
// own; here the machine's process group is the machine), reads nothing from
// stdin and appends its output to /var/log/kubelet.log.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"k8s.io/klog/v2"
)

const (
	kubeletLogPath      = "/var/log/kubelet.log"
	kubeadmFlagsEnvFile = "/var/lib/kubelet/kubeadm-flags.env"
	defaultsEnvFile     = "/etc/default/kubelet"
)

var kubeletDropIn = map[string]string{
	"KUBELET_KUBECONFIG_ARGS": "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf",
	"KUBELET_CONFIG_ARGS":     "--config=/var/lib/kubelet/config.yaml",
}

var kubeletExecStart = []string{"$KUBELET_KUBECONFIG_ARGS", "$KUBELET_CONFIG_ARGS", "$KUBELET_KUBEADM_ARGS", "$KUBELET_EXTRA_ARGS"}

var kubeletService struct {
	sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// kubeletArgs expands the drop-in's ExecStart with the unit's environment.
func kubeletArgs() ([]string, error) {
	env := map[string]string{}
	for k, v := range kubeletDropIn {
		env[k] = v
	}
	for _, f := range []string{kubeadmFlagsEnvFile, defaultsEnvFile} {
		vars, err := readEnvironmentFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // EnvironmentFile=- : optional
		}
		if err != nil {
			return nil, err
		}
		for k, v := range vars {
			env[k] = v
		}
	}
	return expandExecStart(kubeletExecStart, env), nil
}

// expandExecStart replaces each word "$VAR" with the variable's value split
// at whitespace (zero or more words), as systemd does for unbraced variables
// that form a whole word.
func expandExecStart(words []string, env map[string]string) []string {
	var out []string
	for _, w := range words {
		if strings.HasPrefix(w, "$") && !strings.HasPrefix(w, "${") {
			out = append(out, strings.Fields(env[w[1:]])...)
			continue
		}
		out = append(out, w)
	}
	return out
}

// readEnvironmentFile parses a systemd EnvironmentFile: KEY=VALUE lines,
// '#' and ';' comments, blank lines, values optionally in single or double
// quotes (with backslash escapes inside double quotes), a trailing backslash
// continuing a line.
func readEnvironmentFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var pending string
	for sc.Scan() {
		line := pending + sc.Text()
		pending = ""
		if strings.HasSuffix(line, "\\") {
			pending = strings.TrimSuffix(line, "\\")
			continue
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			continue // systemd ignores lines without '=' (with a warning)
		}
		key = strings.TrimSpace(key)
		vars[key] = unquoteEnvValue(strings.TrimSpace(value))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return vars, nil
}

func unquoteEnvValue(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v[1 : len(v)-1]
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		var b strings.Builder
		in := v[1 : len(v)-1]
		for i := 0; i < len(in); i++ {
			if in[i] == '\\' && i+1 < len(in) {
				i++
				switch in[i] {
				case 'n':
					b.WriteByte('\n')
				case 't':
					b.WriteByte('\t')
				default:
					b.WriteByte(in[i])
				}
				continue
			}
			b.WriteByte(in[i])
		}
		return b.String()
	}
	return v
}

// startKubeletService starts `<this executable> kubelet <drop-in args>`.
func startKubeletService() error {
	args, err := kubeletArgs()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(kubeletLogPath), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(kubeletLogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()

	cmd := exec.Command(self, append([]string{"kubelet"}, args...)...)
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Same process group, no Pdeathsig: the kubelet outlives `kubeadm join`
	// and dies with the machine.
	if err := cmd.Start(); err != nil {
		return err
	}
	klog.V(1).Infof("[kubelet-start] kubelet started (pid %d): %s %s", cmd.Process.Pid, self, strings.Join(cmd.Args[1:], " "))
	kubeletService.Lock()
	kubeletService.cmd = cmd
	kubeletService.done = make(chan struct{})
	kubeletService.Unlock()
	go func() {
		err := cmd.Wait()
		kubeletService.Lock()
		kubeletService.err = err
		kubeletService.Unlock()
		close(kubeletService.done)
	}()
	return nil
}

// kubeletExited reports whether the kubelet started by startKubeletService has exited.
func kubeletExited() (bool, error) {
	kubeletService.Lock()
	done := kubeletService.done
	kubeletService.Unlock()
	if done == nil {
		return false, nil
	}
	select {
	case <-done:
		kubeletService.Lock()
		defer kubeletService.Unlock()
		if kubeletService.err == nil {
			return true, errors.New("exit status 0")
		}
		return true, kubeletService.err
	default:
		return false, nil
	}
}
