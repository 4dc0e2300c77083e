// Package lifecycletest lets tests choose what pods/log answers. client-go's
// fake clientset streams "fake logs" for every pod and cannot fail a log
// read; the API server can answer 404 for a pod gone, 400 for a container
// that never started, 5xx, or stream megabytes.
package lifecycletest

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	fakerest "k8s.io/client-go/rest/fake"
)

// LogFunc answers one pod's log read: the body streamed with 200, or an
// error status the API server would send (its body is made a
// metav1.Status, as the API server's is).
type LogFunc func(pod string) (body io.Reader, status *metav1.Status)

// WithLogs is client with its pods/log reads answered by logs; everything
// else, and the actions recorded, stay client's.
func WithLogs(client kubernetes.Interface, logs LogFunc) kubernetes.Interface {
	return &clientset{Interface: client, logs: logs}
}

type clientset struct {
	kubernetes.Interface
	logs LogFunc
}

func (c *clientset) CoreV1() corev1client.CoreV1Interface {
	return &coreV1{CoreV1Interface: c.Interface.CoreV1(), logs: c.logs}
}

type coreV1 struct {
	corev1client.CoreV1Interface
	logs LogFunc
}

func (c *coreV1) Pods(namespace string) corev1client.PodInterface {
	return &pods{PodInterface: c.CoreV1Interface.Pods(namespace), namespace: namespace, logs: c.logs}
}

type pods struct {
	corev1client.PodInterface
	namespace string
	logs      LogFunc
}

func (p *pods) GetLogs(name string, opts *corev1.PodLogOptions) *rest.Request {
	// The fake's own GetLogs records the action (and its reactors run);
	// its request is replaced.
	_ = p.PodInterface.GetLogs(name, opts)
	client := &fakerest.RESTClient{
		Client: fakerest.CreateHTTPClient(func(*http.Request) (*http.Response, error) {
			body, status := p.logs(name)
			if status != nil {
				status.APIVersion, status.Kind, status.Status = "v1", "Status", metav1.StatusFailure
				data, err := json.Marshal(status)
				if err != nil {
					return nil, err
				}
				return &http.Response{
					StatusCode: int(status.Code),
					Header:     http.Header{"Content-Type": {"application/json"}},
					Body:       io.NopCloser(strings.NewReader(string(data))),
				}, nil
			}
			return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(body)}, nil
		}),
		NegotiatedSerializer: scheme.Codecs.WithoutConversion(),
		GroupVersion:         corev1.SchemeGroupVersion,
		VersionedAPIPath:     "/api/v1/namespaces/" + p.namespace + "/pods/" + name + "/log",
	}
	return client.Request()
}

// Output is a reader of n bytes of numbered lines, made as they are read:
// a test can stream megabytes without holding them.
func Output(n int64) io.Reader {
	return io.LimitReader(&lines{}, n)
}

type lines struct {
	line []byte
	i    int
	next int
}

func (l *lines) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if l.i == len(l.line) {
			l.line = append(l.line[:0], "line "...)
			l.line = strconv.AppendInt(l.line, int64(l.next), 10)
			l.line = append(l.line, '\n')
			l.i, l.next = 0, l.next+1
		}
		k := copy(p[n:], l.line[l.i:])
		l.i += k
		n += k
	}
	return n, nil
}
