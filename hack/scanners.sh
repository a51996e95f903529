#!/usr/bin/env bash
# Install the two security scanners tests/chart/test_security_scan.py runs over what the operator
# deploys, pinned here and cached outside the repository beside the test cluster:
#   checkov     from PyPI, in a virtual environment of its own (its pinned dependencies would
#               fight the project's .venv)
#   kube-score  built from its Go module
# Each is skipped when the cache already holds the pinned version (its .version file, written
# last, so a half-done install never looks done). Cold, on two cores: checkov ~40 s, kube-score
# ~50 s (mostly downloading and compiling k8s.io/api).
#
#   hack/scanners.sh          install what is missing
#   hack/scanners.sh paths    print "checkov=<path>" and "kube-score=<path>" (the test reads these)
set -euo pipefail

CHECKOV_VERSION=3.3.30
KUBE_SCORE_VERSION=v1.20.0

CACHE="${AUTORESEARCH_SCANNERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/autoresearch-operator}"
CHECKOV_DIR="$CACHE/checkov"          # a venv; .version says which checkov it holds
KUBE_SCORE_DIR="$CACHE/kube-score"    # the binary and its .version
CHECKOV="$CHECKOV_DIR/bin/checkov"
KUBE_SCORE="$KUBE_SCORE_DIR/kube-score"

if [ "${1:-}" = paths ]; then
	echo "checkov=$CHECKOV"
	echo "kube-score=$KUBE_SCORE"
	exit 0
fi

NICE=(nice -n 10)  # two cores are shared with everyone else's work
mkdir -p "$CACHE"
trap 'rm -rf "$CACHE"/*.tmp.$$' EXIT

installed() {  # installed <dir> <version>
	[ "$(cat "$1/.version" 2>/dev/null)" = "$2" ]
}

if ! installed "$CHECKOV_DIR" "$CHECKOV_VERSION"; then
	start=$SECONDS
	echo "==> installing checkov $CHECKOV_VERSION into $CHECKOV_DIR"
	# A venv records its own path, so it is built where it will live; .version comes last.
	rm -rf "$CHECKOV_DIR"
	"${PYTHON:-python3}" -m venv "$CHECKOV_DIR"
	"${NICE[@]}" "$CHECKOV_DIR/bin/python" -m pip install -q --disable-pip-version-check \
		"checkov==$CHECKOV_VERSION"
	"$CHECKOV" --version >/dev/null
	echo "$CHECKOV_VERSION" >"$CHECKOV_DIR/.version"
	echo "==> installed checkov $CHECKOV_VERSION in $((SECONDS - start))s"
fi

if ! installed "$KUBE_SCORE_DIR" "$KUBE_SCORE_VERSION"; then
	start=$SECONDS
	GO="$(command -v go || echo /usr/local/go/bin/go)"
	[ -x "$GO" ] || { echo "error: go is not installed (tried /usr/local/go/bin/go)" >&2; exit 1; }
	echo "==> building kube-score $KUBE_SCORE_VERSION into $KUBE_SCORE_DIR"
	tmp="$KUBE_SCORE_DIR.tmp.$$"
	rm -rf "$tmp" && mkdir -p "$tmp"
	# No VCS stamping and no workspace: the build must not depend on the clone it runs from.
	(cd / && export GOWORK=off GOFLAGS="${GOFLAGS:-} -buildvcs=false" GOBIN="$tmp" &&
		"${NICE[@]}" "$GO" install -trimpath -ldflags "-s -w -X main.version=$KUBE_SCORE_VERSION" \
		"github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION")
	"$tmp/kube-score" version
	echo "$KUBE_SCORE_VERSION" >"$tmp/.version"
	rm -rf "$KUBE_SCORE_DIR" && mv "$tmp" "$KUBE_SCORE_DIR"
	echo "==> built kube-score $KUBE_SCORE_VERSION in $((SECONDS - start))s"
fi
