#!/usr/bin/env bash
# Start, stop or inspect the local control plane (see docs/cluster.md).
#   cluster.sh up [--session PID]   build what is missing, start the cluster or reuse a running one
#   cluster.sh release PID          a test session is done; the last one out stops a cluster
#                                   that a test session started (never one from `make cluster-up`)
#   cluster.sh down                 stop it and remove its state
#   cluster.sh build                build only
#   cluster.sh status               exit 0 when the API server answers
#   cluster.sh kubectl ARGS...      kubectl against the cluster
# up and status print `export KUBECONFIG=...` on their last line when the cluster is up.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/cluster/env.sh
source "$HERE/env.sh"
KWOKCTL="$KWOK_BIN/kwokctl"
SESSIONS="$CLUSTER_DIR/test-sessions"  # one file per live test process using the cluster
STARTED_BY_TESTS="$CLUSTER_DIR/started-by-tests"
mkdir -p "$CLUSTER_CACHE"

if [ "${1:-}" = kubectl ]; then
	shift
	exec "$KUBE_BIN/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG" "$@"
fi

# One cluster command at a time: make cluster-up and test sessions may race for it.
exec 9>"$CLUSTER_CACHE/cluster.lock"
flock 9

healthy() {
	[ -f "$CLUSTER_KUBECONFIG" ] &&
		timeout 10 "$KUBE_BIN/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG" get --raw /readyz >/dev/null 2>&1
}

any_alive() {
	local pid
	for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done
	return 1
}

down() {
	[ -d "$CLUSTER_DIR" ] || return 0
	# --kubeconfig names the file to remove the cluster's context from: its own, deleted anyway.
	"$KWOKCTL" delete cluster --name "$CLUSTER_NAME" --kubeconfig "$CLUSTER_KUBECONFIG" >/dev/null 2>&1 9>&- || true
	# Nothing may outlive the state: stop any component still running from this cluster's folder.
	local pids=() pid file
	for file in "$CLUSTER_DIR"/pids/*.pid; do
		[ -e "$file" ] || continue
		pid=$(cat "$file")
		grep -qF "$CLUSTER_DIR/" "/proc/$pid/cmdline" 2>/dev/null && pids+=("$pid")
	done
	if [ ${#pids[@]} -gt 0 ]; then
		kill "${pids[@]}" 2>/dev/null || true
		for _ in $(seq 50); do  # up to 10 s for a graceful exit
			any_alive "${pids[@]}" || break
			sleep 0.2
		done
		kill -9 "${pids[@]}" 2>/dev/null || true
	fi
	rm -rf "$CLUSTER_DIR"
}

up() {  # up [--session PID]
	"$HERE/build.sh"
	if healthy; then
		echo "==> cluster $CLUSTER_NAME is already up"
	else
		down  # state left by a cluster whose processes are gone (a reboot, a killed session)
		echo "==> starting cluster $CLUSTER_NAME (state in $CLUSTER_DIR)"
		local start=$SECONDS
		# kwokctl logs JSON when not on a terminal: keep the message of each line.
		KWOK_KUBE_VERSION="$KUBE_VERSION" \
		KWOK_KUBE_APISERVER_BINARY="$KUBE_BIN/kube-apiserver" \
		KWOK_KUBE_CONTROLLER_MANAGER_BINARY="$KUBE_BIN/kube-controller-manager" \
		KWOK_KUBE_SCHEDULER_BINARY="$KUBE_BIN/kube-scheduler" \
		KWOK_KUBECTL_BINARY="$KUBE_BIN/kubectl" \
		KWOK_ETCD_BINARY="$ETCD_BIN/etcd" \
		KWOK_CONTROLLER_BINARY="$KWOK_BIN/kwok" \
			"$KWOKCTL" create cluster --name "$CLUSTER_NAME" --config "$HERE/kwokctl.yaml" \
			--kubeconfig "" --wait 3m 2>&1 9>&- |  # the daemons it starts must not hold the lock
			sed -u -e 's/^{.*"msg":"\([^"]*\)".*/    kwokctl: \1/'
		healthy || { echo "error: the API server does not answer; logs: $CLUSTER_DIR/logs" >&2; exit 1; }
		echo "==> cluster $CLUSTER_NAME is up in $((SECONDS - start))s"
		[ "${1:-}" = --session ] && touch "$STARTED_BY_TESTS"
	fi
	if [ "${1:-}" = --session ]; then
		mkdir -p "$SESSIONS" && touch "$SESSIONS/$2"
	fi
	"$KUBE_BIN/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG" version 2>/dev/null | sed 's/^/    /'
	echo "export KUBECONFIG=$CLUSTER_KUBECONFIG"
}

release() {  # release PID
	rm -f "$SESSIONS/$1"
	local file
	for file in "$SESSIONS"/*; do
		[ -e "$file" ] || continue
		kill -0 "$(basename "$file")" 2>/dev/null && return 0  # still in use
		rm -f "$file"
	done
	if [ -e "$STARTED_BY_TESTS" ]; then
		down
		echo "==> cluster $CLUSTER_NAME is down (the test sessions that used it are done)"
	fi
}

case "${1:-}" in
	up) shift; up "$@" ;;
	release) release "$2" ;;
	down) down; echo "==> cluster $CLUSTER_NAME is down" ;;
	build) "$HERE/build.sh" ;;
	status) healthy && echo "export KUBECONFIG=$CLUSTER_KUBECONFIG" ;;
	*) echo "usage: $0 up [--session PID]|release PID|down|build|status|kubectl ARGS..." >&2; exit 2 ;;
esac
