"""What the infrastructure and the serving container must agree on, free of heavy imports.

`contract.topology` holds the regions, jurisdictions and residency rule (built of `contract.regions`' entries, with
its JSON form in `contract.topology_json`); `contract.service` the port, probe paths, model store layout,
environment variable names, metric names and Kubernetes identity of the serving workload.
Both modules use the standard library only, so the serving image and a Pulumi program import them alike.
"""
