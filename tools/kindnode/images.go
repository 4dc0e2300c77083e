package kindnode

import (
	"fmt"
	"path"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gmini-dev/gmini/tools/cluster/kind"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
)

// Repository and EtcdTag are the kind configuration's (see
// kind.OfflineImageRepository).
const (
	Repository = kind.OfflineImageRepository
	EtcdTag    = kind.OfflineEtcdTag
)

// PauseTag is kubeadm v1.34's pause version (constants.PauseVersion).
const PauseTag = "3.10.1"

// controlPlane are the images kubeadm runs, by name, with the component
// (the kube binary's link) each starts.
var controlPlane = []struct{ image, tag, component string }{
	{"kube-apiserver", modbuild.KubernetesVersion, "kube-apiserver"},
	{"kube-controller-manager", modbuild.KubernetesVersion, "kube-controller-manager"},
	{"kube-scheduler", modbuild.KubernetesVersion, "kube-scheduler"},
	{"kube-proxy", modbuild.KubernetesVersion, "kube-proxy"},
	{"etcd", EtcdTag, "etcd"},
}

// iptablesPackages are the Debian packages whose files kube-proxy's image
// carries: iptables (nft and legacy) with its libraries, conntrack, and
// the C library they link.
var iptablesPackages = []string{
	"iptables", "libxtables12", "libip4tc2", "libip6tc2", "libnftnl11", "libmnl0",
	"libnetfilter-conntrack3", "libnfnetlink0", "conntrack", "libnetfilter-cthelper0",
	"libnetfilter-queue1", "libc6", "libgcc-s1",
}

// imageEnv is every image's PATH.
var imageEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// controlPlaneImages builds kubeadm's images: one layer with the kube
// multi-call binary and a link per component in /usr/local/bin (kubeadm's
// static pods and kube-proxy's DaemonSet run them by name), kube-proxy's
// with a second layer of iptables from the node's own Debian packages (it
// programs the rules with them), and pause. They are written to one
// docker-archive tarball the node imports into containerd at boot.
func controlPlaneImages(kubeBin, pauseBin, rootfsTar string, idx *rootfsIndex, out string) error {
	kube := []entry{copyOf("/usr/local/bin/kube", 0o755, kubeBin)}
	for _, c := range controlPlane {
		kube = append(kube, link("/usr/local/bin/"+c.component, "kube"))
	}
	kubeLayer, err := layer(kube)
	if err != nil {
		return fmt.Errorf("kube layer: %w", err)
	}
	want, err := packageFiles(rootfsTar, idx, iptablesPackages)
	if err != nil {
		return err
	}
	want["/etc/ld.so.cache"] = true
	files, err := extract(rootfsTar, want)
	if err != nil {
		return err
	}
	// The merged-/usr links, and iptables as the node's own rules are
	// made: the kind entrypoint picks nft or legacy by the rules it finds;
	// with the engine's nft rules there, nft.
	for _, top := range []string{"/bin", "/sbin", "/lib", "/lib64"} {
		if h, ok := idx.paths[top]; ok && h.Linkname != "" {
			files = append(files, link(top, h.Linkname))
		}
	}
	for _, cmd := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		files = append(files, link("/usr/sbin/"+cmd, "xtables-nft-multi"))
	}
	ipt, err := layer(files)
	if err != nil {
		return fmt.Errorf("iptables layer: %w", err)
	}
	pauseLayer, err := layer([]entry{copyOf("/pause", 0o755, pauseBin)})
	if err != nil {
		return fmt.Errorf("pause layer: %w", err)
	}

	refs := map[name.Reference]v1.Image{}
	for _, c := range controlPlane {
		layers := []v1.Layer{kubeLayer}
		if c.image == "kube-proxy" {
			layers = append(layers, ipt)
		}
		img, err := image(layers, []string{"/usr/local/bin/" + c.component})
		if err != nil {
			return err
		}
		ref, err := name.NewTag(path.Join(Repository, c.image) + ":" + c.tag)
		if err != nil {
			return err
		}
		refs[ref] = img
	}
	pause, err := image([]v1.Layer{pauseLayer}, []string{"/pause"})
	if err != nil {
		return err
	}
	ref, err := name.NewTag(Repository + "/pause:" + PauseTag)
	if err != nil {
		return err
	}
	refs[ref] = pause
	return tarball.MultiRefWriteToFile(out, refs)
}

// image is layers with an entrypoint, for linux on this machine.
func image(layers []v1.Layer, entrypoint []string) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch()
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config = v1.Config{Entrypoint: entrypoint, Env: imageEnv, WorkingDir: "/"}
	return mutate.ConfigFile(img, cfg)
}

func withLabel(img v1.Image, k, v string) (v1.Image, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	if cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	cfg.Config.Labels[k] = v
	return mutate.ConfigFile(img, cfg)
}
