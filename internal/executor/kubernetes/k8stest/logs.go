//go:build linux

package k8stest

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// SimLogEnv is the container variable whose value the simulated kubelet
// serves as the container's log.
const SimLogEnv = "PLINTH_SIM_LOG"

// serveLogs runs the log endpoint of the simulated nodes' kubelet on
// 127.0.0.1:port: the API server proxies pods/log there
// (/containerLogs/<namespace>/<pod>/<container>). KWOK serves logs only
// from static files, so this stands in: the log is the container's
// PLINTH_SIM_LOG, and a follower is held until the container terminates,
// as a kubelet holds it until the process exits.
func serveLogs(client kubernetes.Interface, p pki, port int) (stop func(), err error) {
	cert, err := tls.LoadX509KeyPair(p.kubeletCert, p.kubeletKey)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveContainerLog(client, w, r)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, ReadHeaderTimeout: 10 * time.Second}
	go srv.ServeTLS(l, "", "")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}, nil
}

func serveContainerLog(client kubernetes.Interface, w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/containerLogs/"), "/")
	if !strings.HasPrefix(r.URL.Path, "/containerLogs/") || len(parts) != 3 {
		http.NotFound(w, r)
		return
	}
	ns, name, container := parts[0], parts[1], parts[2]
	ctx := r.Context()
	pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	var text string
	for _, c := range pod.Spec.Containers {
		if c.Name != container {
			continue
		}
		for _, e := range c.Env {
			if e.Name == SimLogEnv {
				text = e.Value
			}
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(text))
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if r.URL.Query().Get("follow") != "true" {
		return
	}
	for {
		pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || err == nil && containerDone(pod, container) || errors.Is(err, context.Canceled) || ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func containerDone(pod *corev1.Pod, container string) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == container {
			return cs.State.Terminated != nil
		}
	}
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}
