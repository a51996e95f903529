# Local Kubernetes control plane for tests, included from the Makefile (see docs/cluster.md).
.PHONY: cluster-build cluster-up cluster-down

cluster-build: ## Build kube-apiserver, controller-manager, scheduler, kubectl, etcd and kwok into the cache
	@hack/cluster/cluster.sh build

cluster-up: ## Start the local control plane on loopback (builds it first) and print KUBECONFIG
	@hack/cluster/cluster.sh up

cluster-down: ## Stop the local control plane and remove its state
	@hack/cluster/cluster.sh down
