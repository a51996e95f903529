#!/usr/bin/env bash
# Kueue (sigs.k8s.io/kueue) as a local process next to the control plane (see "Kueue" in
# docs/cluster.md).
#   kueue.sh build    build cmd/kueue once into the cluster cache ($CLUSTER_CACHE/kueue-<version>)
#   kueue.sh up       against the running cluster named by env.sh: install the CRDs, start kueue
#                     in the background (config, certificates, pid and log in $CLUSTER_DIR/kueue),
#                     point the webhook configurations at it and wait until the API server gets
#                     answers from them. It stops by itself when the cluster goes (cluster.sh down).
#   kueue.sh down     stop it and remove its webhook configurations (the CRDs and objects stay)
#   kueue.sh status   exit 0 when kueue runs and is ready
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/cluster/env.sh
source "$HERE/env.sh"

KUEUE_VERSION="${KUEUE_VERSION:-v0.17.0}"
KUEUE_MODULE=sigs.k8s.io/kueue
KUEUE_BIN="$CLUSTER_CACHE/kueue-$KUEUE_VERSION"
KUEUE_DIR="$CLUSTER_DIR/kueue"  # this cluster's kueue: config, certificates, pid, log
KUEUE_NAMESPACE=kueue-system
PIDFILE="$KUEUE_DIR/kueue.pid"
KUBECTL=("$KUBE_BIN/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG")
GO="$(command -v go || echo /usr/local/go/bin/go)"
# No VCS stamping, no workspace: the module is built as published.
export GOWORK=off GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# A field of the module's `go mod download -json` (downloaded if missing): Dir is its source,
# with the CRDs and webhook manifests; Info its .info file, with the release time.
module_field() {
	"$GO" mod download -json "$KUEUE_MODULE@$KUEUE_VERSION" | sed -n "s/.*\"$1\": \"\(.*\)\".*/\1/p"
}

build() {
	if [ -x "$KUEUE_BIN/kueue" ]; then
		return 0
	fi
	[ -x "$GO" ] || { echo "error: go is not installed (need Go >= 1.25)" >&2; exit 1; }
	mkdir -p "$CLUSTER_CACHE"
	local log="$CLUSTER_CACHE/kueue-build.log" tmp="$KUEUE_BIN.tmp.$$" src date total start=$SECONDS
	trap 'rm -rf "$KUEUE_BIN".tmp.$$' EXIT  # a half-built folder never looks built
	echo "==> building Kueue $KUEUE_VERSION into $KUEUE_BIN (log: $log)"
	src="$(module_field Dir)"
	[ -f "$src/go.mod" ] || { echo "error: go mod download $KUEUE_MODULE@$KUEUE_VERSION failed" >&2; exit 1; }
	date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(module_field Info)" 2>/dev/null || true)"
	# Built inside the module (read-only in the module cache; go build writes nothing there), so
	# its own go.mod decides the dependencies. (v0.17.0 has no replace directives.)
	total=$(cd "$src" && "$GO" list -deps ./cmd/kueue | wc -l)
	rm -rf "$tmp" && mkdir -p "$tmp"
	local v=sigs.k8s.io/kueue/pkg/version
	# go build -v names each package as it compiles: one progress line per 100, with the minutes.
	if ! (cd "$src" && nice -n 19 "$GO" build -v -trimpath -o "$tmp/kueue" \
		-ldflags "-s -w -X $v.GitVersion=$KUEUE_VERSION -X $v.GitCommit=module -X $v.BuildDate=${date:-unknown}" \
		./cmd/kueue) 2>&1 |
		awk -v of=" of at most $total" -v logfile="$log" -v start="$(date +%s)" '
			{ print >> logfile; n++
			  if (n % 100 == 0) {
				printf "    kueue: compiled %d%s packages (%.1f min)\n", n, of, (systime() - start) / 60; fflush() } }
			END { printf "    kueue: compiled %d packages\n", n }'; then
		tail -20 "$log" >&2
		echo "error: building Kueue failed; the whole log is $log" >&2
		exit 1
	fi
	[ -x "$tmp/kueue" ] || { tail -20 "$log" >&2; echo "error: no kueue binary; see $log" >&2; exit 1; }
	rm -rf "$KUEUE_BIN" && mv "$tmp" "$KUEUE_BIN"
	echo "==> built Kueue $KUEUE_VERSION in $((SECONDS - start))s"
}

kubectl() { "${KUBECTL[@]}" "$@"; }

cluster_up() {
	[ -f "$CLUSTER_KUBECONFIG" ] && timeout 10 "${KUBECTL[@]}" get --raw /readyz >/dev/null 2>&1
}

kueue_pid() {  # the pid of this cluster's kueue, when it runs
	local pid
	pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
	grep -qF "$KUEUE_DIR/" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

ready() {  # kueue's /readyz: its certificates are in place and its webhook server listens
	[ -f "$KUEUE_DIR/ports.env" ] && kueue_pid >/dev/null || return 1
	# shellcheck source=/dev/null
	source "$KUEUE_DIR/ports.env"
	python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
		"http://127.0.0.1:$KUEUE_HEALTH_PORT/readyz" 2>/dev/null
}

free_ports() {  # free_ports N: N loopback ports nobody listens on now
	python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# A CA and a serving certificate as Kueue's cert rotator makes them (the CA named kueue-ca, the
# server <webhookServiceName>.<namespace>.svc), plus 127.0.0.1, the address the API server calls:
# the rotator's own certificate names no IP. The CA key is PKCS#1, which the rotator parses.
make_certs() {  # make_certs DIR
	local dir=$1 svc="kueue-webhook-service.$KUEUE_NAMESPACE.svc"
	mkdir -p "$dir"
	cat >"$dir/openssl.cnf" <<-EOF
		[req]
		distinguished_name = dn
		[dn]
		[ca]
		basicConstraints = critical,CA:TRUE
		keyUsage = critical,keyCertSign,digitalSignature,keyEncipherment
		subjectAltName = DNS:kueue-ca
		[server]
		basicConstraints = CA:FALSE
		keyUsage = critical,digitalSignature,keyEncipherment
		extendedKeyUsage = serverAuth
		subjectAltName = DNS:$svc,IP:127.0.0.1
	EOF
	(
		cd "$dir"
		openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.pkcs8.key -out ca.crt -days 3650 \
			-config openssl.cnf -extensions ca -subj "/O=kueue/CN=kueue-ca"
		openssl rsa -in ca.pkcs8.key -out ca.key -traditional
		openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -config openssl.cnf -subj "/CN=$svc"
		openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 8)" \
			-days 3650 -extfile openssl.cnf -extensions server -out tls.crt
		rm -f ca.pkcs8.key tls.csr
	) >/dev/null 2>&1 || { echo "error: openssl failed to make the webhook certificates in $dir" >&2; exit 1; }
}

# Kueue's webhook configurations from its module, for the frameworks enabled in config.yaml and
# its own resources; each webhook calls https://127.0.0.1:PORT/<path> (the API server runs here
# as a process and can only reach a URL, not a Service).
webhook_configurations() {  # webhook_configurations SRC PORT CABUNDLE
	kubectl create --dry-run=client -o json -f "$1/config/components/webhook/manifests.yaml" |
		python3 -c '
import json, re, sys
port, ca = sys.argv[1], sys.argv[2]
keep = re.compile(r"^/(mutate|validate)-(kueue-x-k8s-io|batch-v1-job)")  # config.yaml: batch/job
text, items, i = sys.stdin.read(), [], 0  # kubectl prints one object after the other
while text[i:].strip():
    item, i = json.JSONDecoder().raw_decode(text, len(text) - len(text[i:].lstrip()))
    items.append(item)
for item in items:
    item["metadata"]["name"] = "kueue-" + item["metadata"]["name"]
    item["metadata"].setdefault("labels", {})["app.kubernetes.io/name"] = "kueue"
    hooks = []
    for hook in item["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        if keep.match(path):
            hook["clientConfig"] = {"url": "https://127.0.0.1:%s%s" % (port, path), "caBundle": ca}
            hooks.append(hook)
    item["webhooks"] = hooks
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)' "$2" "$3"
}

start_kueue() {  # install what kueue needs, start it and wait until it is ready
	local src ca config="$KUEUE_DIR/config.yaml" certs="$KUEUE_DIR/certs"
	src="$(module_field Dir)"
	echo "==> starting Kueue $KUEUE_VERSION for cluster $CLUSTER_NAME (state in $KUEUE_DIR)"
	mkdir -p "$KUEUE_DIR"
	read -r KUEUE_WEBHOOK_PORT KUEUE_METRICS_PORT KUEUE_HEALTH_PORT <<<"$(free_ports 3)"
	printf 'KUEUE_WEBHOOK_PORT=%s\nKUEUE_METRICS_PORT=%s\nKUEUE_HEALTH_PORT=%s\n' \
		"$KUEUE_WEBHOOK_PORT" "$KUEUE_METRICS_PORT" "$KUEUE_HEALTH_PORT" >"$KUEUE_DIR/ports.env"
	sed -e "s|@WEBHOOK_PORT@|$KUEUE_WEBHOOK_PORT|; s|@METRICS_PORT@|$KUEUE_METRICS_PORT|" \
		-e "s|@HEALTH_PORT@|$KUEUE_HEALTH_PORT|; s|@CERT_DIR@|$certs|" "$HERE/kueue/config.yaml" >"$config"
	[ -f "$certs/tls.crt" ] || make_certs "$certs"
	ca="$(base64 -w0 <"$certs/ca.crt")"

	kubectl create namespace "$KUEUE_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	# The Secret Kueue's cert rotator keeps the certificates in: it finds them valid and keeps
	# them, and injects the CA. A Deployment would mount it as certDir; here they are files.
	kubectl -n "$KUEUE_NAMESPACE" create secret generic kueue-webhook-server-cert --dry-run=client -o yaml \
		--from-file="$certs/ca.crt" --from-file="$certs/ca.key" --from-file="$certs/tls.crt" --from-file="$certs/tls.key" |
		kubectl apply -f - >/dev/null

	# The CRDs, with the conversion webhooks (v1beta1 <-> v1beta2) that the module's kustomization adds.
	kubectl apply --server-side --force-conflicts -f "$src/config/components/crd/bases" >/dev/null
	local patch crd
	sed -n 's|^- path: \(patches/webhook_in_.*\.yaml\)$|\1|p' "$src/config/components/crd/kustomization.yaml" |
	while read -r patch; do
		crd="$(sed -n 's/^  name: //p' "$src/config/components/crd/$patch")"
		kubectl patch crd "$crd" --type merge -p "{\"spec\":{\"conversion\":{\"strategy\":\"Webhook\",\"webhook\":{
			\"conversionReviewVersions\":[\"v1\"],
			\"clientConfig\":{\"url\":\"https://127.0.0.1:$KUEUE_WEBHOOK_PORT/convert\",\"caBundle\":\"$ca\"}}}}}" >/dev/null
	done
	kubectl wait --for condition=Established --timeout 60s -f "$src/config/components/crd/bases" >/dev/null

	# In a session of its own (a caller's Ctrl-C does not reach it), under supervise.py: it closes
	# inherited descriptors (a caller's flock is not held on) and stops kueue with the cluster.
	rm -f "$PIDFILE"
	setsid python3 "$HERE/kueue/supervise.py" "$PIDFILE" "$CLUSTER_KUBECONFIG" "$KUEUE_DIR/kueue.log" \
		"$KUEUE_BIN/kueue" --config "$config" --kubeconfig "$CLUSTER_KUBECONFIG" </dev/null >/dev/null 2>&1 &
	for _ in $(seq 120); do  # up to 60 s
		ready && return 0
		[ -f "$PIDFILE" ] && ! kueue_pid >/dev/null && break  # it exited
		sleep 0.5
	done
	tail -20 "$KUEUE_DIR/kueue.log" >&2
	echo "error: kueue did not get ready (it exited or took over 60 s); log: $KUEUE_DIR/kueue.log" >&2
	exit 1
}

up() {
	cluster_up || { echo "error: cluster $CLUSTER_NAME is not up (hack/cluster/cluster.sh up)" >&2; exit 1; }
	build
	local begin=$SECONDS
	if ready; then
		echo "==> kueue is already running for cluster $CLUSTER_NAME (pid $(kueue_pid))"
	else
		down_process
		start_kueue
	fi
	# shellcheck source=/dev/null
	source "$KUEUE_DIR/ports.env"
	# Applied once kueue answers: until then they would fail every Job creation. Kueue logs
	# "Webhook not found" for them at its start; the CA it would inject is in them already.
	webhook_configurations "$(module_field Dir)" "$KUEUE_WEBHOOK_PORT" "$(base64 -w0 <"$KUEUE_DIR/certs/ca.crt")" |
		kubectl apply -f - >/dev/null
	# The API server must reach the webhooks: a labelled Job comes back suspended from a dry run.
	local probe suspended=""
	probe='{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"kueue-probe","namespace":"default",
		"labels":{"kueue.x-k8s.io/queue-name":"kueue-probe"}},"spec":{"template":{"spec":{
		"restartPolicy":"Never","containers":[{"name":"c","image":"none","command":["true"]}]}}}}'
	for _ in $(seq 20); do  # the API server picks up new webhook configurations within a second or so
		suspended="$(echo "$probe" | kubectl create --dry-run=server -o jsonpath='{.spec.suspend}' -f - 2>&1)" || true
		[ "$suspended" = true ] && break
		sleep 0.5
	done
	[ "$suspended" = true ] || { echo "error: the API server gets no answer from kueue's webhooks: $suspended" >&2; exit 1; }
	echo "==> kueue is up in $((SECONDS - begin))s (pid $(kueue_pid); webhooks on 127.0.0.1:$KUEUE_WEBHOOK_PORT; log $KUEUE_DIR/kueue.log)"
}

down_process() {
	local pid
	pid="$(kueue_pid)" || { rm -f "$PIDFILE"; return 0; }
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 50); do  # up to 10 s for a graceful exit
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$PIDFILE"
}

down() {
	# Without kueue every Job creation would fail on its webhooks (failurePolicy: Fail).
	if cluster_up; then
		kubectl delete --ignore-not-found mutatingwebhookconfiguration kueue-mutating-webhook-configuration >/dev/null
		kubectl delete --ignore-not-found validatingwebhookconfiguration kueue-validating-webhook-configuration >/dev/null
	fi
	down_process
}

case "${1:-}" in
	build) build; echo "Kueue $KUEUE_VERSION: $KUEUE_BIN/kueue" ;;
	up) up ;;
	down) down; echo "==> kueue is down for cluster $CLUSTER_NAME" ;;
	status) ready && echo "kueue is running for cluster $CLUSTER_NAME (pid $(kueue_pid))" ;;
	*) echo "usage: $0 build|up|down|status" >&2; exit 2 ;;
esac
