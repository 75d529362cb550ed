"""How long the Pulumi program takes to evaluate, offline, for 3 regions and for 30: per regional stack and global.

    python -m bench.infra_scale [--quick] [--regions 30] [--out bench/results/infra_scale.json]

Each stack runs the real program (``infra.program.build``) under ``infra/offline.py``'s mocks, as ``pulumi preview``
runs it minus the engine and providers: config validation, every component, every registration. The 3-region
topology is this repository's (its stack files); the larger one is generated here: the default three regions plus
real AWS regions up to ``--regions``, EU member-state regions in the strict EU jurisdiction (EU callers fail over
among them only), the rest unrestricted, some taking over continents and Cloudflare regions, each with a stack config
derived from the stack file of its kind. The global stack is timed on its own, given the regional stacks' exports
(as its StackReferences read them after those stacks are deployed); the target is under 30 s for 30 regions on 2
cores. Times are for a warm process: importing the program (mostly the provider SDKs) is reported once, apart.
``--quick`` generates 6 regions instead of 30, for CI.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from contract.topology import DEFAULT_TOPOLOGY, Jurisdiction, Region, Topology

TARGET_GLOBAL_S = 30.0
# (AWS region, jurisdiction, timezone): EU member states' regions first among the EU ones, real regions only.
EXTRA_REGIONS: tuple[tuple[str, str, str], ...] = (
    ("eu-central-1", "eu", "Europe/Berlin"),
    ("us-east-1", "us", "America/New_York"),
    ("ap-southeast-1", "intl", "Asia/Singapore"),
    ("sa-east-1", "intl", "America/Sao_Paulo"),
    ("eu-west-3", "eu", "Europe/Paris"),
    ("ap-southeast-2", "intl", "Australia/Sydney"),
    ("ap-south-1", "intl", "Asia/Kolkata"),
    ("af-south-1", "intl", "Africa/Johannesburg"),
    ("me-central-1", "intl", "Asia/Dubai"),
    ("eu-north-1", "eu", "Europe/Stockholm"),
    ("eu-south-1", "eu", "Europe/Rome"),
    ("eu-south-2", "eu", "Europe/Madrid"),
    ("us-east-2", "us", "America/Chicago"),
    ("us-west-1", "us", "America/Los_Angeles"),
    ("ca-central-1", "intl", "America/Toronto"),
    ("ca-west-1", "intl", "America/Edmonton"),
    ("mx-central-1", "intl", "America/Mexico_City"),
    ("ap-northeast-2", "intl", "Asia/Seoul"),
    ("ap-northeast-3", "jp", "Asia/Tokyo"),
    ("ap-southeast-3", "intl", "Asia/Jakarta"),
    ("ap-southeast-4", "intl", "Australia/Melbourne"),
    ("ap-southeast-5", "intl", "Asia/Kuala_Lumpur"),
    ("ap-southeast-7", "intl", "Asia/Bangkok"),
    ("ap-south-2", "intl", "Asia/Kolkata"),
    ("ap-east-1", "intl", "Asia/Hong_Kong"),
    ("me-south-1", "intl", "Asia/Bahrain"),
    ("il-central-1", "intl", "Asia/Jerusalem"),
)
# Areas a generated region takes over from the default three when it is part of the topology.
TAKEOVERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # key -> (continents, Cloudflare regions)
    "eu-central-1": ((), ("EEU",)),
    "us-east-1": ((), ("ENAM",)),
    "ap-southeast-1": ((), ("SEAS",)),
    "sa-east-1": (("SA",), ("NSAM", "SSAM")),
    "ap-southeast-2": (("OC",), ("OC",)),
    "ap-south-1": ((), ("SAS",)),
    "af-south-1": (("AF",), ("SAF", "NAF")),
    "me-central-1": ((), ("ME",)),
}
INTL = Jurisdiction(code="intl", name="Unrestricted (generated)", is_strict_residency=False)
PUBLISHER = "arn:aws:iam::123456789012:role/speech-release-ci"


def generated_topology(count: int) -> Topology:
    """The default three regions plus ``count - 3`` real AWS regions, with areas and failover chains that pass the
    topology's own checks (strict EU areas served and failed over inside the EU only)."""
    if not 3 <= count <= 3 + len(EXTRA_REGIONS):
        raise SystemExit(f"--regions {count}: choose 3 to {3 + len(EXTRA_REGIONS)}")
    extras = EXTRA_REGIONS[: count - 3]
    keys = [aws for aws, _, _ in extras]
    eu = ["eu-west", *(aws for aws, code, _ in extras if code == "eu")]
    taken = {k: v for k, v in TAKEOVERS.items() if k in keys}
    taken_continents = {c for continents, _ in taken.values() for c in continents}
    taken_codes = {c for _, codes in taken.values() for c in codes}

    def available(*candidates: str, not_: str = "") -> tuple[str, ...]:
        present = {"us-west", "eu-west", "ap-northeast", *keys}
        return tuple(k for k in dict.fromkeys(candidates) if k in present and k != not_)

    regions = [
        dataclasses.replace(
            r,
            continents=tuple(c for c in r.continents if c not in taken_continents),
            cloudflare_regions=tuple(c for c in r.cloudflare_regions if c not in taken_codes),
            failover=available(*(eu[1:3] if r.key == "eu-west" else ()), "us-east-1", *r.failover, not_=r.key),
        )
        for r in DEFAULT_TOPOLOGY.regions
    ]
    for aws, code, timezone in extras:
        continents, codes = taken.get(aws, ((), ()))
        if code == "eu":
            failover = available(*eu, "us-east-1", "us-west", not_=aws)
        else:
            failover = available("us-west", "us-east-1", "ap-northeast", "eu-west", not_=aws)
        regions.append(Region(aws, aws, code, timezone, continents, codes, failover=failover))
    return Topology(
        regions=tuple(regions), jurisdictions=(*DEFAULT_TOPOLOGY.jurisdictions, INTL), default_region="us-west"
    )


def stack_configs(topology: Topology) -> dict[str, dict[str, Any]]:
    """Config per stack: this repository's stack files, and for generated regions one derived from eu-west's (EU)
    or us-west's (others) with its own AWS region, jurisdiction and VPC range."""
    from infra import offline

    configs: dict[str, dict[str, Any]] = {}
    for index, region in enumerate(topology.regions):
        if region.key in DEFAULT_TOPOLOGY.keys:
            configs[region.key] = offline.stack_config(region.key)
            continue
        template = offline.stack_config("eu-west" if region.jurisdiction == "eu" else "us-west")
        configs[region.key] = {
            **template,
            "aws:region": region.aws_region,
            "speech:region": region.key,
            "speech:jurisdiction": region.jurisdiction,
            "speech:vpcCidr": f"10.{100 + index}.0.0/16",
        }
    global_config = offline.stack_config("global")
    global_config["speech:deployOrder"] = list(topology.keys)
    global_config["speech:publishers"] = {
        code: global_config["speech:publishers"].get(code, [PUBLISHER])
        for code in (j.code for j in topology.jurisdictions if topology.regions_in(j.code))
    }
    configs["global"] = global_config
    return configs


def measure(name: str, topology: Topology) -> dict[str, Any]:
    """Evaluate every regional stack, then the global stack with their exports; time each."""
    from infra import offline

    configs = stack_configs(topology)
    prefix = configs["global"]["speech:stackPrefix"]
    regional: dict[str, float] = {}
    resources: dict[str, int] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for region in topology.regions:
        started = time.perf_counter()
        graph = offline.run(region.key, topology, config=configs[region.key])
        regional[region.key] = time.perf_counter() - started
        resources[region.key] = len(graph.resources)
        outputs[f"{prefix}/{region.key}"] = graph.exports
    started = time.perf_counter()
    graph = offline.run("global", topology, config=configs["global"], stack_outputs=outputs)
    global_s = time.perf_counter() - started
    values = list(regional.values())
    return {
        "topology": name,
        "regions": len(topology.regions),
        "regional_s": regional,
        "regional_mean_s": sum(values) / len(values),
        "regional_max_s": max(values),
        "regional_total_s": sum(values),
        "regional_resources": resources,
        "global_s": global_s,
        "global_resources": len(graph.resources),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.infra_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a generated topology of 6 regions instead of 30 (CI)")
    parser.add_argument("--regions", type=int, default=30, help="regions of the generated topology (default 30)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default bench/results/infra_scale.json)")
    args = parser.parse_args(argv)
    count = 6 if args.quick else args.regions
    machine = report.machine()
    print(report.machine_line(machine))
    started = time.perf_counter()
    from infra import offline  # noqa: F401 (timed: the program and its provider SDKs)

    import_s = time.perf_counter() - started
    runs = [
        measure("default (3 regions)", DEFAULT_TOPOLOGY),
        measure(f"generated ({count} regions)", generated_topology(count)),
    ]
    base, large = runs
    fields = ("topology", "regions", "regional_mean_s", "regional_max_s", "regional_total_s", "global_s")
    rows = [(*(r[f] for f in fields), r["global_resources"]) for r in runs]
    columns = (
        "topology",
        "regions",
        "regional mean s",
        "regional max s",
        "all regional s",
        "global s",
        "global resources",
    )
    print(report.table(f"offline evaluation (import of the program {import_s:.1f} s, once)", columns, rows))
    growth = report.ratio(large["global_s"], base["global_s"])
    meets = large["global_s"] < TARGET_GLOBAL_S
    print(
        f"global stack: {report.times(growth)} the 3-region time for {count} regions; "
        f"{'within' if meets else 'OVER'} the {TARGET_GLOBAL_S:g} s target"
    )
    path = report.write(
        "infra_scale",
        {
            "command": "python -m bench.infra_scale " + " ".join(argv if argv is not None else sys.argv[1:]),
            "measured": "under load (shared machine)" if machine["load_average"][0] > 1 else "quiet machine",
            "machine": machine,
            "import_s": import_s,
            "target_global_s": TARGET_GLOBAL_S,
            "global_within_target": meets,
            "global_growth": growth,
            "runs": runs,
        },
        args.out,
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
