"""Pinned versions of everything the infrastructure installs, in one place.

Update a version here, in its own commit, after reading its release notes.
"""

# EKS Kubernetes versions this package is tested against; a stack picks one with `speech:kubernetesVersion`.
SUPPORTED_KUBERNETES_VERSIONS: tuple[str, ...] = ("1.32", "1.33", "1.34", "1.35")
