"""Run the real Pulumi program with no cloud and no engine, and return what it would create.

`pulumi.runtime.set_mocks` replaces the engine at the resource boundary: every resource the program registers is
recorded with its type, logical name, inputs (camelCase, as the provider sees them) and parent, and the mock
answers with an id and ARN derived from the name. Nothing is replaced above that boundary, so components, config
validation and topology derivations run exactly as they do under `pulumi up`.

The program is `infra.program.build` for a topology the caller passes (`__main__.py` passes `DEFAULT_TOPOLOGY`),
so a test that adds a region builds it with the same code as `pulumi up`, and nothing is patched.

Used by the test harness (`tests/conftest.py`) and by the offline plan (`python -m infra.plan <stack>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import runpy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.stack import Stack, wait_for_rpcs
from pulumi.runtime.sync_await import _sync_await

from contract.topology import Topology
from infra.project import REPOSITORY, Project

ROOT = REPOSITORY.root
PROJECT_FILE = ROOT / "Pulumi.yaml"
PROGRAM = REPOSITORY.program
MOCK_ACCOUNT_ID = "123456789012"


def project_name() -> str:
    return REPOSITORY.name


def stack_file(stack: str) -> Path:
    return REPOSITORY.stack_file(stack)


def stack_config(stack: str) -> dict[str, Any]:
    """The `config:` block of this repository's `Pulumi.<stack>.yaml`, keys fully qualified."""
    return REPOSITORY.stack_config(stack)


@dataclass(frozen=True)
class Registration:
    """One resource registration as the engine would have seen it."""

    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str | None  # parent URN; None for children of the stack itself
    id: str | None
    is_custom: bool
    dependencies: tuple[str, ...] = ()  # URNs this registration waits for (inputs and depends_on)
    ignore_changes: tuple[str, ...] = ()
    provider: str | None = None  # "<provider URN>::<id>" when the resource names an explicit provider
    outputs: dict[str, Any] = field(default_factory=dict)  # what the mock answered (ids, ARNs, DNS names)


@dataclass
class Graph:
    """Every resource a program registered, plus its stack exports."""

    stack: str
    resources: list[Registration] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)
    secret_exports: frozenset[str] = frozenset()  # export names the engine would store encrypted

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> Registration:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r} in stack {self.stack}")
        return matches[0]

    def by_urn(self, urn: str) -> Registration:
        for r in self.resources:
            if r.urn == urn:
                return r
        raise KeyError(urn)

    def children_of(self, parent: Registration) -> list[Registration]:
        return [r for r in self.resources if r.parent == parent.urn]

    def ancestors(self, resource: Registration) -> Iterator[Registration]:
        parent = resource.parent
        while parent is not None:
            registration = self.by_urn(parent)
            yield registration
            parent = registration.parent


def _mock_state(args: pulumi_mocks.MockResourceArgs, region: str) -> dict[str, Any]:
    """Outputs a provider would fill in, derived from the name so that runs are deterministic."""
    name = args.name
    state = dict(args.inputs)
    service = args.typ.split(":")[1].split("/")[0] if args.typ.count(":") >= 2 else "custom"
    state.setdefault("arn", f"arn:aws:{service}:{region}:{MOCK_ACCOUNT_ID}:{name}")
    if args.typ == "aws:s3/bucket:Bucket":
        state.setdefault("bucket", args.inputs.get("bucket") or name)
        state["arn"] = f"arn:aws:s3:::{state['bucket']}"  # bucket ARNs carry no region or account
        state.setdefault("bucketRegionalDomainName", f"{state['bucket']}.s3.{region}.amazonaws.com")
    if args.typ == "aws:eks/cluster:Cluster":
        state.setdefault("endpoint", f"https://{name}.gr7.{region}.eks.amazonaws.com")
        state.setdefault("certificateAuthority", {"data": "bW9jay1jYQ=="})
        state.setdefault("identities", [{"oidcs": [{"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{name}"}]}])
        state["vpcConfig"] = {
            **state.get("vpcConfig", {}),
            "clusterSecurityGroupId": f"sg-{name}-cluster",
            "vpcId": f"vpc-of-{name}",
        }
    if args.typ == "aws:kms/key:Key":
        state.setdefault("keyId", f"{name}-id")
        state["arn"] = f"arn:aws:kms:{region}:{MOCK_ACCOUNT_ID}:key/{state['keyId']}"  # KMS key ARNs end in key/<id>
    if args.typ == "aws:eks/nodeGroup:NodeGroup":
        # EKS names a managed node group's Auto Scaling group itself; schedules attach to that name.
        state.setdefault("nodeGroupName", f"{name}-mock")
        state.setdefault(
            "resources", [{"autoscalingGroups": [{"name": f"eks-{name}-mock-asg"}], "remoteAccessSecurityGroupId": ""}]
        )
        state.setdefault("status", "ACTIVE")
    if args.typ == "aws:lb/targetGroup:TargetGroup":
        # Target group ARNs end in targetgroup/<name>/<id>; IAM policies scoped to one are checked against that form.
        state["arn"] = f"arn:aws:elasticloadbalancing:{region}:{MOCK_ACCOUNT_ID}:targetgroup/{name}/0123456789abcdef"
    if args.typ == "aws:lb/loadBalancer:LoadBalancer":
        state.setdefault("dnsName", f"{name}.elb.{region}.amazonaws.com")
        state.setdefault("zoneId", "Z1MOCKELBZONE")
    if args.typ == "aws:acm/certificate:Certificate":
        # ACM answers one validation CNAME per name, the same for that name in every region of an account.
        domains = [args.inputs["domainName"], *args.inputs.get("subjectAlternativeNames", [])]
        state.setdefault(
            "domainValidationOptions",
            [
                {
                    "domainName": d,
                    "resourceRecordName": f"_mock-{d.replace('.', '-')}.{d}.",
                    "resourceRecordType": "CNAME",
                    "resourceRecordValue": f"_mock-{d.replace('.', '-')}.acm-validations.aws.",
                }
                for d in domains
            ],
        )
    if args.typ == "aws:route53/record:Record":
        state.setdefault("fqdn", str(args.inputs.get("name", "")).rstrip("."))
    return state


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers resource registrations and invokes the way a provider would, deterministically.

    ``stack_outputs`` feeds `StackReference`s: {fully qualified stack name: outputs}.
    """

    def __init__(self, region: str, stack_outputs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.region = region
        self.stack_outputs = dict(stack_outputs or {})

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict]:
        if args.typ == "pulumi:pulumi:StackReference":
            ref = args.inputs.get("name") or args.name
            if ref not in self.stack_outputs:
                raise KeyError(
                    f"StackReference {ref!r} has no outputs in this offline run; known: {list(self.stack_outputs)}"
                )
            return ref, {"name": ref, "outputs": dict(self.stack_outputs[ref]), "secretOutputNames": []}
        region = args.inputs.get("region") or self.region
        return f"{args.name}-id", _mock_state(args, region)

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list[tuple[str, str]]]:
        # An empty failure list, not None: pulumi's MockMonitor iterates it.
        region = args.args.get("region") or self.region
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": MOCK_ACCOUNT_ID,
                "arn": f"arn:aws:iam::{MOCK_ACCOUNT_ID}:user/offline",
                "userId": "offline",
            }, []
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{region}{suffix}" for suffix in "abc"]
            return {"names": names, "zoneIds": [f"{region[:3]}-az{i}" for i in range(1, 4)], "id": region}, []
        if args.token == "aws:index/getRegion:getRegion":
            return {"name": region, "region": region, "id": region}, []
        if args.token == "aws:index/getIpRanges:getIpRanges":
            # Documentation ranges (RFC 5737) stand in for the service's published ones, two per region.
            return {
                "cidrBlocks": ["192.0.2.0/25", "198.51.100.0/25"],
                "ipv6CidrBlocks": [],
                "regions": args.args.get("regions", []),
                "services": args.args.get("services", []),
                "createDate": "2026-01-01-00-00-00",
                "syncToken": 1,
                "id": "ip-ranges",
            }, []
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}, []
        return {}, []


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A mock monitor that also remembers each registration's parent, which `Mocks.new_resource` never sees."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):  # the engine's gRPC method name, hence the case
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs = pulumi.runtime.rpc.deserialize_properties(request.object)
        self.registrations.append(
            Registration(
                urn=response.urn,
                type=request.type,
                name=request.name,
                inputs=_plain(inputs),
                parent=None if _is_stack_urn(request.parent) else request.parent,
                id=response.id or None,
                is_custom=bool(request.custom),
                dependencies=tuple(request.dependencies),
                ignore_changes=tuple(request.ignoreChanges),
                provider=request.provider or None,
                outputs=_plain(pulumi.runtime.rpc.deserialize_properties(response.object)),
            )
        )
        return response


def _ensure_event_loop() -> None:
    """Pulumi's runtime waits on the thread's event loop; an earlier `asyncio.run()` (a test's) leaves none."""
    try:
        if not asyncio.get_event_loop().is_closed():
            return
    except RuntimeError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one program run (and the provider SDK imports it triggers), or for
    any other work that only builds objects which all stay alive (the test harness's collection).

    A run allocates hundreds of thousands of objects that live until it ends (Outputs, futures, registrations, the
    SDKs' generated classes), so the collector's full passes, each scanning every object the process holds, find
    nothing to free and took about a third of a run's CPU. Reference counting still frees everything acyclic; the
    cycles a run leaves go in the collector's first pass after it. The collector's previous state is restored, so
    nesting and a caller that disabled it are both left as they were.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _is_stack_urn(urn: str) -> bool:
    """True for the root stack (or no parent at all): its children are the program's top-level resources."""
    return not urn or urn.split("::")[2].split("$")[-1] == "pulumi:pulumi:Stack"


def _plain(value: Any) -> Any:
    """Unwrap secrets and unknowns so that tests compare plain values."""
    if isinstance(value, dict):
        if value.get(pulumi.runtime.rpc._special_sig_key) == pulumi.runtime.rpc._special_secret_sig:
            return _plain(value.get("value"))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _config_entries(config: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Stack-file config -> the engine's wire form: strings, objects as JSON, secrets unwrapped and listed."""
    values: dict[str, str] = {}
    secrets: list[str] = []
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            secrets.append(key)
            value = f"offline-secret-for-{key}"
        values[key] = value if isinstance(value, str) else json.dumps(value)
    return values, secrets


def run(
    stack: str,
    topology: Topology,
    *,
    config: Mapping[str, Any] | None = None,
    stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Graph:
    """Run this repository's program for ``stack`` and ``topology`` under mocks; return its graph and exports.

    ``config`` defaults to the stack file's config; tests pass a modified copy to exercise validation.
    """
    with collector_paused():
        # Imported here, not at the top: the program imports every provider SDK (Cloudflare's alone takes seconds),
        # which `python -m infra.plan` pays only once it plans, not to print its help or to refuse an unknown ref.
        from infra import program

        return run_program(stack, lambda: program.build(topology), config=config, stack_outputs=stack_outputs)


def run_program(
    stack: str,
    body: Callable[[], object],
    *,
    config: Mapping[str, Any] | None = None,
    stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
    project: str | None = None,
) -> Graph:
    """Run any Pulumi program ``body`` for ``stack`` under mocks (a platform team's own, or ``__main__.py``).

    ``project`` is the Pulumi project name URNs carry; this repository's by default.
    """
    with collector_paused():
        return _run_program(stack, body, config, stack_outputs, project)


def _run_program(
    stack: str,
    body: Callable[[], object],
    config: Mapping[str, Any] | None,
    stack_outputs: Mapping[str, Mapping[str, Any]] | None,
    project: str | None,
) -> Graph:
    raw = stack_config(stack) if config is None else dict(config)
    region = str(raw.get("aws:region", "us-east-1"))
    values, secrets = _config_entries(raw)
    _ensure_event_loop()

    pulumi_settings.reset_options()
    pulumi_settings.set_root_resource(None)  # type: ignore[arg-type]
    mocks = RecordingMocks(region, stack_outputs)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_all_config(values, secrets)
    pulumi.runtime.set_mocks(mocks, project=project or project_name(), stack=stack, preview=False, monitor=monitor)
    pulumi_settings.SETTINGS.rpc_manager.clear()
    pulumi_settings.SETTINGS.outputs.clear()

    root = pulumi_settings.get_root_resource()
    if not isinstance(root, Stack):
        raise RuntimeError(f"the mocks created no root stack to run {stack!r} in (got {root!r})")
    body()
    _sync_await(wait_for_rpcs())
    exports = {name: _sync_await(pulumi.Output.from_input(value).future()) for name, value in root.outputs.items()}
    secret = frozenset(
        name for name, value in root.outputs.items() if _sync_await(pulumi.Output.from_input(value).is_secret())
    )
    _sync_await(wait_for_rpcs())
    return Graph(stack=stack, resources=list(monitor.registrations), exports=_plain(exports), secret_exports=secret)


def run_stack(
    stack: str,
    topology: Topology,
    *,
    config: Mapping[str, Any] | None = None,
    regional_configs: Mapping[str, Mapping[str, Any]] | None = None,
    regional: Callable[[str], Graph] | None = None,
) -> Graph:
    """Run a stack as `pulumi up` would after its dependencies: the global stack sees every regional stack's
    exports through its StackReferences, taken from running those regional stacks offline first.

    ``regional_configs`` gives a regional stack's config by stack name instead of its file (a region a test adds);
    ``regional`` gives a regional stack's graph by stack name instead of running it (a caller that has it already).
    """
    raw = stack_config(stack) if config is None else dict(config)
    references: dict[str, dict[str, Any]] = {}
    if raw.get("speech:scope") == "global":
        prefix = raw.get("speech:stackPrefix")
        configs = regional_configs or {}
        graph_of = regional or (lambda key: run(key, topology, config=configs.get(key)))
        for region in topology.regions:
            references[f"{prefix}/{region.key}"] = graph_of(region.key).exports
    return run(stack, topology, config=raw, stack_outputs=references)


def run_project(project: Project, stack: str, *, stack_outputs: Mapping[str, Mapping[str, Any]] | None = None) -> Graph:
    """Run a project's own program (`Pulumi.yaml`'s main) for ``stack`` with its stack file, as `pulumi up` would.

    A global stack (`speech:scope: global`) sees, through its StackReferences, the exports of every other stack of
    the project, each run offline the same way first, unless ``stack_outputs`` gives them ({qualified name:
    exports}); so a platform team's program is planned exactly like this one.
    """
    raw = project.stack_config(stack)
    references = dict(stack_outputs or {})
    if raw.get("speech:scope") == "global" and stack_outputs is None:
        prefix = raw.get("speech:stackPrefix")
        for other in project.stacks():
            if other != stack and not project.is_global(other):
                references[f"{prefix}/{other}"] = _run_project_program(project, other, {}).exports
    return _run_project_program(project, stack, references)


def _run_project_program(project: Project, stack: str, references: Mapping[str, Mapping[str, Any]]) -> Graph:
    return run_program(
        stack,
        lambda: runpy.run_path(str(project.program), run_name="__main__"),
        config=project.stack_config(stack),
        stack_outputs=references,
        project=project.name,
    )
