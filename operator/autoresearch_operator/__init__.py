"""autoresearch-operator: autonomous research orgs that improve a GPT trainer, locally or on Kubernetes."""

__version__ = "0.1.0"
