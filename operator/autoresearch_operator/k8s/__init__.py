"""Kubernetes pieces of the operator: pure builders here, thin kopf handlers elsewhere."""
