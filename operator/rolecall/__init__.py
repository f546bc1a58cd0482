"""rolecall: AWS IAM roles for Kubernetes workloads, on any cluster."""

__version__ = "0.1.0"
