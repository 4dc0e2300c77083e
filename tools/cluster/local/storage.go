package local

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The node's storage, as clusters usually come with it: a default
// StorageClass, so a PersistentVolumeClaim that names none binds, backed by
// static `local` PersistentVolumes in the run directory (kind's default
// class is named standard too). No provisioner runs: the volumes exist
// from the start and bind when a pod first uses a claim.
const (
	StorageClass = "standard"
	volumes      = 8
	volumeSize   = "2Gi"
)

func createStorage(ctx context.Context, b *boot) error {
	cs, err := adminClient(b.p)
	if err != nil {
		return err
	}
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        StorageClass,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner: "kubernetes.io/no-provisioner",
		// Bind when a pod is scheduled, as local volumes need.
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
	}
	if _, err := cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create storage class %s: %w", StorageClass, err)
	}
	for i := range volumes {
		dir := b.p.path("volumes", fmt.Sprintf("pv%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("make volume directory: %w", err)
		}
		// Pods run as non-root users; the kubelet does not change the
		// owner of a local volume to the pod's fsGroup.
		if err := os.Chmod(dir, 0o777); err != nil {
			return fmt.Errorf("make volume directory: %w", err)
		}
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-pv%d", b.p.Name, i)},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(volumeSize)},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              StorageClass,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
				NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{NodeName}}},
				}}}},
			},
		}
		if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create persistent volume %s: %w", pv.Name, err)
		}
	}
	return nil
}
