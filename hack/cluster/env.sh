# Shared settings for the local control plane; sourced by build.sh and cluster.sh.
# Versions come from go.mod so there is one place to change them.
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER_CACHE="${AUTORESEARCH_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/autoresearch-operator/cluster}"
_required() { grep -oE "^(require )?[[:space:]]*$1 v[^ ]+" "$_here/go.mod" | awk '{print $NF}'; }
KUBE_VERSION="$(_required k8s.io/kubernetes)"
ETCD_VERSION="$(_required go.etcd.io/etcd/server/v3)"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
KUBE_BIN="$CLUSTER_CACHE/kubernetes-$KUBE_VERSION"
ETCD_BIN="$CLUSTER_CACHE/etcd-$ETCD_VERSION"
KWOK_BIN="$CLUSTER_CACHE/kwok-$KWOK_VERSION"
CLUSTER_NAME="${AUTORESEARCH_CLUSTER_NAME:-autoresearch}"
export KWOK_WORKDIR="$CLUSTER_CACHE/kwok"  # kwokctl keeps each cluster's state under here
CLUSTER_DIR="$KWOK_WORKDIR/clusters/$CLUSTER_NAME"
CLUSTER_KUBECONFIG="$CLUSTER_DIR/kubeconfig.yaml"
unset _here _required
