#!/usr/bin/env bash
# Build the local control plane once into a cache outside the repository (see docs/cluster.md):
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from k8s.io/kubernetes,
# etcd from go.etcd.io/etcd/server/v3 (both pinned in this directory's go.mod), and kwok/kwokctl.
# Binaries already in the cache are kept; a cold build on two cores takes many minutes.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/cluster/env.sh
source "$HERE/env.sh"

[ -n "$KUBE_VERSION" ] && [ -n "$ETCD_VERSION" ] || { echo "error: no versions found in $HERE/go.mod" >&2; exit 1; }
GO="$(command -v go || echo /usr/local/go/bin/go)"
[ -x "$GO" ] || { echo "error: go is not installed (need Go >= 1.24; /usr/local/go/bin/go is tried too)" >&2; exit 1; }
# No VCS stamping: a clone owned by another user would make go build fail on `git status`.
export GOWORK=off GOFLAGS="${GOFLAGS:-} -buildvcs=false"
NICE=(nice -n 10)  # two cores are shared with everyone else's work
LOG="$CLUSTER_CACHE/build.log"
mkdir -p "$CLUSTER_CACHE"
trap 'rm -rf "$CLUSTER_CACHE"/*.tmp.$$' EXIT  # a half-built folder never looks built

# go build -v names each package as it compiles: one progress line per 100, with the minutes.
progress() {  # progress <what> [<most packages>]
	local of=""
	[ -n "${2:-}" ] && of=" of at most $2"
	awk -v what="$1" -v of="$of" -v logfile="$LOG" -v start="$(date +%s)" '
		{ print >> logfile; n++
		  if (n % 100 == 0) {
			printf "    %s: compiled %d%s packages (%.1f min)\n", what, n, of, (systime() - start) / 60; fflush() } }
		END { printf "    %s: compiled %d packages\n", what, n }'
}

build() {  # build <what> <outdir> <ldflags> <packages...>
	local what=$1 out=$2 ldflags=$3; shift 3
	local tmp="$out.tmp.$$" total start=$SECONDS
	total=$(cd "$HERE" && "$GO" list -deps "$@" | wc -l)
	echo "==> building $what into $out (log: $LOG)"
	rm -rf "$tmp" && mkdir -p "$tmp"
	if ! (cd "$HERE" && "${NICE[@]}" "$GO" build -v -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" "$@") 2>&1 \
		| progress "$what" "$total"; then
		tail -20 "$LOG" >&2
		echo "error: building $what failed; the whole log is $LOG" >&2
		exit 1
	fi
	rm -rf "$out" && mv "$tmp" "$out"
	echo "==> built $what in $((SECONDS - start))s"
}

# Versions are what --version reports; kwokctl reads them to pick each component's flags.
kube_ldflags() {
	local v=$KUBE_VERSION minor date pkg flags=""
	minor=$(echo "$v" | cut -d. -f2)
	date=$("$GO" mod download -json "k8s.io/kubernetes@$v" 2>/dev/null | sed -n 's/.*"Time": "\(.*\)".*/\1/p' | head -1)
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=${date:-unknown}"
	done
	echo "$flags"
}

if [ ! -x "$KUBE_BIN/kube-apiserver" ]; then
	build "Kubernetes $KUBE_VERSION" "$KUBE_BIN" "$(kube_ldflags)" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
fi

if [ ! -x "$ETCD_BIN/etcd" ]; then
	build "etcd $ETCD_VERSION" "$ETCD_BIN" "" ./etcd
fi

if [ ! -x "$KWOK_BIN/kwokctl" ]; then
	echo "==> installing kwok and kwokctl $KWOK_VERSION into $KWOK_BIN"
	tmp="$KWOK_BIN.tmp.$$"
	rm -rf "$tmp" && mkdir -p "$tmp"
	if ! (cd / && GOBIN="$tmp" "${NICE[@]}" "$GO" install -v -trimpath -ldflags "-s -w" \
		"sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION") 2>&1 \
		| progress "kwok $KWOK_VERSION"; then
		tail -20 "$LOG" >&2
		echo "error: go install kwok failed; the whole log is $LOG" >&2
		exit 1
	fi
	rm -rf "$KWOK_BIN" && mv "$tmp" "$KWOK_BIN"
fi

etcd_version="$("$ETCD_BIN/etcd" --version)"
echo "$("$KUBE_BIN/kube-apiserver" --version), ${etcd_version%%$'\n'*}, $("$KWOK_BIN/kwokctl" --version)"
