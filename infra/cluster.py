"""Per-region EKS cluster: control plane, access, IRSA, managed add-ons, the node pools of :mod:`infra.node_pools`
and the cluster's one Kubernetes provider.

The cluster takes what it builds from (a region, a Kubernetes version, pool specs, subnets, a key, who may reach
its API), not a stack's config, so a program of its own can build one from values it chose itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as kubernetes

from contract.topology import Region
from infra import iam
from infra.k8s.pod_identity import POD_IDENTITY_SERVICE
from infra.node_pools import NodePool, NodePoolArgs, PoolSpec
from infra.tags import region_tags

# Every control-plane log stream: audit and authenticator answer "who did what" after an incident.
CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
LOG_RETENTION_DAYS = 90

# EKS managed add-ons that need no Helm. Versions are left to EKS (the default for the cluster's Kubernetes
# version) rather than pinned here. The network and identity agents must run before nodes can become Ready;
# CoreDNS is a Deployment and only turns healthy once nodes exist, so it is installed after the node pools.
ADDONS_BEFORE_NODES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
ADDONS_AFTER_NODES = ("coredns",)
# The VPC CNI enforces NetworkPolicy only when asked to (its node agent); the serving namespace relies on it.
VPC_CNI_CONFIGURATION = {"enableNetworkPolicy": "true"}
VPC_CNI_SERVICE_ACCOUNT = "aws-node"
CLUSTER_ADMIN_POLICY_ARN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

_CLUSTER_POLICIES = ("arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",)
_CNI_POLICIES = ("arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",)
# The CNI has its own role (Pod Identity for kube-system/aws-node), so no pod on a node inherits its ENI rights.
_NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    # Session Manager instead of SSH: nodes get no key pair and no inbound port.
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
)


def cluster_name(project: str, region: Region) -> str:
    """The EKS cluster's name: fixed, so `aws eks update-kubeconfig --name` and subnet tags can be written ahead."""
    return f"{project}-{region.key}"


def kubeconfig(name: str, endpoint: str, ca_data: str, aws_region: str) -> str:
    """A kubeconfig (JSON, which is YAML) that authenticates with `aws eks get-token` as the caller's AWS identity.

    Tokens are minted on each use instead of being stored, so the kubeconfig itself grants nothing to whoever reads
    it without AWS credentials; it is still exported as a secret because it names the API endpoint.
    """
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", name, "--region", aws_region, "--output", "json"],
            "interactiveMode": "Never",
        }
    }
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
        },
        indent=2,
    )


_SERVICE_ROLE_ACTIONS = ("sts:AssumeRole", "sts:TagSession")


@dataclass(frozen=True)
class ClusterArgs:
    region: Region
    cluster_name: str
    kubernetes_version: str
    pools: Sequence[PoolSpec]  # e.g. infra.node_pools.pool_specs(cfg) for a stack of this program
    subnet_ids: pulumi.Input[list[str]]  # private subnets: control-plane interfaces and all nodes
    kms_key_arn: pulumi.Input[str]
    public_access_cidrs: Sequence[str] = ("0.0.0.0/0",)  # who may reach the API endpoint from the internet
    admin_arns: Sequence[str] = ()  # IAM principals given cluster-admin through access entries
    deletion_protection: bool = True


class Cluster(pulumi.ComponentResource):
    """An EKS cluster whose Secrets are envelope-encrypted with the region's KMS key.

    Access is managed with EKS access entries (authentication mode API), not the aws-auth ConfigMap, so access is
    an AWS resource Pulumi can diff; the identity that creates the cluster is its first administrator and
    ``admin_arns`` get cluster-admin too. The public API endpoint answers only ``public_access_cidrs``. Deletion
    protection stops a stray `pulumi destroy` or console click; the STANDARD upgrade policy refuses to run out of
    standard support into paid extended support silently. An IAM OIDC provider lets service accounts assume IAM
    roles (IRSA); the VPC CNI gets its own role through Pod Identity and enforces NetworkPolicy. Control-plane logs
    go to a log group with a retention, created before the cluster so that EKS does not create one that keeps logs
    forever. ``provider`` is the one Kubernetes provider every object in this cluster is created with.
    """

    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    certificate_authority_data: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    cluster_security_group_id: pulumi.Output[str]
    node_role_arn: pulumi.Output[str]
    node_pools: pulumi.Output[dict[str, str]]
    autoscaling_groups: dict[str, pulumi.Output[str]]  # pool role -> the Auto Scaling group EKS made for it
    provider: kubernetes.Provider
    ready: list[pulumi.Resource]  # what Kubernetes objects wait for: nodes, CoreDNS and the admins' access

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = args.region.aws_region
        tags = region_tags(args.region)

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            region=region,
            name=f"/aws/eks/{args.cluster_name}/cluster",
            retention_in_days=LOG_RETENTION_DAYS,
            # Audit logs name users, pods and requests: encrypted with the region's key, which admits only this
            # region's log groups (infra.access.key_policy).
            kms_key_id=args.kms_key_arn,
            tags=tags,
            opts=child,
        )

        cluster_role = iam.service_role(
            f"{name}-role",
            "eks.amazonaws.com",
            managed_policy_arns=_CLUSTER_POLICIES,
            action=_SERVICE_ROLE_ACTIONS,
            # Named, not auto-named: the region's key policy admits it by name, and the key exists before it.
            role_name=iam.cluster_role_name(args.cluster_name),
            tags=tags,
            opts=child,
        )
        # AmazonEKSClusterPolicy grants no KMS use; envelope encryption of Secrets needs these on our key only.
        key_use = aws.iam.RolePolicy(
            f"{name}-role-secrets-key",
            role=cluster_role.role.id,
            policy=pulumi.Output.from_input(args.kms_key_arn).apply(
                lambda arn: iam.policy_document(
                    [iam.statement("Allow", ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"], arn)]
                )
            ),
            opts=child,
        )

        cluster = aws.eks.Cluster(
            f"{name}-eks",
            region=region,
            name=args.cluster_name,
            version=args.kubernetes_version,
            role_arn=cluster_role.role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=args.subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=True,
                public_access_cidrs=list(args.public_access_cidrs),
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=True
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                resources=["secrets"], provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=args.kms_key_arn)
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            deletion_protection=args.deletion_protection,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, key_use, *cluster_role.attachments]),
        )

        issuer = cluster.identities.apply(_oidc_issuer)
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc",
            url=issuer,
            # IAM fetches the issuer's certificate thumbprint itself when none is given.
            client_id_lists=["sts.amazonaws.com"],
            tags=tags,
            opts=child,
        )

        node_role = iam.service_role(
            f"{name}-node-role",
            "ec2.amazonaws.com",
            managed_policy_arns=_NODE_POLICIES,
            action=_SERVICE_ROLE_ACTIONS,
            tags=tags,
            opts=child,
        )

        cni_role = iam.service_role(
            f"{name}-cni-role",
            POD_IDENTITY_SERVICE,
            managed_policy_arns=_CNI_POLICIES,
            action=_SERVICE_ROLE_ACTIONS,
            tags=tags,
            opts=child,
        )
        addon_settings: dict[str, dict] = {
            "vpc-cni": {
                "configuration_values": json.dumps(VPC_CNI_CONFIGURATION),
                "pod_identity_associations": [
                    aws.eks.AddonPodIdentityAssociationArgs(
                        role_arn=cni_role.role.arn, service_account=VPC_CNI_SERVICE_ACCOUNT
                    )
                ],
            }
        }

        def addon(addon_name: str, depends_on: list[pulumi.Resource]) -> aws.eks.Addon:
            return aws.eks.Addon(
                f"{name}-{addon_name}",
                region=region,
                cluster_name=cluster.name,
                addon_name=addon_name,
                # EKS installs self-managed copies of these at creation; OVERWRITE adopts them as managed add-ons.
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="PRESERVE",
                tags=tags,
                **addon_settings.get(addon_name, {}),
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
            )

        early_addons = [addon(a, list(cni_role.attachments) if a == "vpc-cni" else []) for a in ADDONS_BEFORE_NODES]
        pools = {
            spec.role: NodePool(
                f"{name}-{spec.role}",
                NodePoolArgs(
                    region=args.region,
                    spec=spec,
                    cluster_name=cluster.name,
                    kubernetes_version=cluster.version,
                    node_role_arn=node_role.role.arn,
                    subnet_ids=args.subnet_ids,
                    tags=tags,
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*node_role.attachments, *early_addons]),
            )
            for spec in args.pools
        }
        late_addons = [addon(a, list(pools.values())) for a in ADDONS_AFTER_NODES]
        admins = self._admins(name, args, cluster, child)

        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(cluster.name, cluster.endpoint, cluster.certificate_authority.data).apply(
                lambda values: kubeconfig(values[0], values[1], values[2], region)
            )
        )
        self.provider = kubernetes.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            # Objects are applied server-side, so a field another controller owns (an HPA's replicas) is not reset.
            enable_server_side_apply=True,
            opts=child,
        )
        self.ready = [*pools.values(), *late_addons, *admins]

        self.name = cluster.name
        self.endpoint = cluster.endpoint
        self.certificate_authority_data = cluster.certificate_authority.data
        self.oidc_provider_arn = oidc.arn
        self.oidc_issuer_url = issuer
        self.cluster_security_group_id = cluster.vpc_config.cluster_security_group_id
        self.node_role_arn = node_role.role.arn
        self.node_pools = pulumi.Output.all(**{role: pool.node_group_name for role, pool in pools.items()})
        self.autoscaling_groups = {role: pool.autoscaling_group_name for role, pool in pools.items()}
        self.register_outputs(
            {
                "name": self.name,
                "endpoint": self.endpoint,
                "certificate_authority_data": self.certificate_authority_data,
                "kubeconfig": self.kubeconfig,
                "oidc_provider_arn": self.oidc_provider_arn,
                "oidc_issuer_url": self.oidc_issuer_url,
                "cluster_security_group_id": self.cluster_security_group_id,
                "node_role_arn": self.node_role_arn,
                "node_pools": self.node_pools,
            }
        )

    def _admins(
        self, name: str, args: ClusterArgs, cluster: aws.eks.Cluster, child: pulumi.ResourceOptions
    ) -> list[pulumi.Resource]:
        """Cluster-admin for each of ``admin_arns``: an access entry and the admin policy, cluster-wide."""
        created: list[pulumi.Resource] = []
        for arn in args.admin_arns:
            principal = arn.rsplit(":", 1)[1].replace("/", "-")
            entry = aws.eks.AccessEntry(
                f"{name}-admin-{principal}",
                region=args.region.aws_region,
                cluster_name=cluster.name,
                principal_arn=arn,
                type="STANDARD",
                opts=child,
            )
            created.append(entry)
            created.append(
                aws.eks.AccessPolicyAssociation(
                    f"{name}-admin-{principal}-policy",
                    region=args.region.aws_region,
                    cluster_name=cluster.name,
                    principal_arn=entry.principal_arn,
                    policy_arn=CLUSTER_ADMIN_POLICY_ARN,
                    access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    opts=child,
                )
            )
        return created


def _oidc_issuer(identities: Sequence[aws.eks.outputs.ClusterIdentity]) -> str:
    """The cluster's OIDC issuer URL; EKS gives every cluster one."""
    oidcs = identities[0].oidcs if identities else None
    issuer = oidcs[0].issuer if oidcs else None
    if not issuer:
        raise pulumi.RunError(f"EKS reported no OIDC issuer for the cluster: {identities}")
    return issuer
