"""The Kubernetes layer of a regional cluster: add-ons, the Istio mesh, the serving workload and its traffic path.

Every object here is created through the cluster's own Kubernetes provider (`Cluster.provider`). The package's
`__init__` imports nothing, so `infra.k8s.grace` (pure arithmetic the config validation shares) stays light.
"""
