"""The order stacks are deployed in, from the global stack's `speech:deployOrder`: canary, other regions, global.

CI reads it instead of listing stacks itself (`.github/workflows/deploy.yml` and `preview.yml` build their matrices
from `--github`), and the README shows it (`--markdown`, between the deploy-waves markers; a test fails on drift):

    python -m infra.deploy_order                 # the waves as JSON
    python -m infra.deploy_order --github        # canary=, regions=, global=, stacks= lines for $GITHUB_OUTPUT
    python -m infra.deploy_order --write README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from contract.topology import DEFAULT_TOPOLOGY, Topology
from infra import config, markers
from infra.project import REPOSITORY, Project

GLOBAL_STACK = "global"
WAVES_START = "<!-- deploy-waves:start -->"
WAVES_END = "<!-- deploy-waves:end -->"


@dataclass(frozen=True)
class StackTarget:
    """One stack as a CI job needs it: its name, the name Pulumi Cloud knows it by, and its AWS region."""

    stack: str
    qualified: str  # "<org>/<project>/<stack>", the form `pulumi --stack` and pulumi/actions take
    aws_region: str


@dataclass(frozen=True)
class DeployWaves:
    """`pulumi up` runs the canary, then each other region in turn, then global, stopping at the first failure."""

    canary: StackTarget
    regions: tuple[StackTarget, ...]
    global_stack: StackTarget

    @property
    def regional(self) -> tuple[StackTarget, ...]:
        """The regional stacks, canary first: what a release or a rollback walks."""
        return (self.canary, *self.regions)

    @property
    def stacks(self) -> tuple[StackTarget, ...]:
        return (*self.regional, self.global_stack)


def deploy_waves(
    topology: Topology = DEFAULT_TOPOLOGY, project: Project = REPOSITORY, global_stack: str = GLOBAL_STACK
) -> DeployWaves:
    """The waves of ``project``'s stacks; a bad `speech:deployOrder` raises the config's one-line error."""
    cfg = config.load(global_stack, project.stack_config(global_stack), topology)
    if not isinstance(cfg, config.GlobalConfig):
        raise config.ConfigError(f"stack {global_stack!r} is not the global stack (speech:scope: global)")

    def target(stack: str) -> StackTarget:
        region = str(project.stack_config(stack).get("aws:region", ""))
        return StackTarget(stack, f"{cfg.stack_prefix}/{stack}", region)

    canary, *others = cfg.deploy_order
    return DeployWaves(target(canary.key), tuple(target(r.key) for r in others), target(global_stack))


def as_dict(waves: DeployWaves) -> dict[str, Any]:
    """The waves by name, as CI jobs read them: ``canary``, ``regions`` (in order), ``global`` and all ``stacks``."""
    return {
        "canary": asdict(waves.canary),
        "regions": [asdict(t) for t in waves.regions],
        "global": asdict(waves.global_stack),
        "stacks": [asdict(t) for t in waves.stacks],
    }


def github_outputs(waves: DeployWaves) -> str:
    """`name=<json>` lines for `$GITHUB_OUTPUT`; jobs read them with `fromJSON`."""
    return "\n".join(f"{name}={json.dumps(value, separators=(',', ':'))}" for name, value in as_dict(waves).items())


def render_markdown(waves: DeployWaves) -> str:
    others = ", then ".join(f"`{t.stack}`" for t in waves.regions)
    return "\n".join(
        [
            "Generated from `speech:deployOrder` (`Pulumi.global.yaml`) by `python -m infra.deploy_order`;",
            "CI runs `pulumi up` in this order on every merge to `main` (`.github/workflows/deploy.yml`),",
            "stopping at the first failure:",
            "",
            f"1. `{waves.canary.stack}`, the canary region;",
            f"2. {others}, one after another;" if waves.regions else "2. no other region;",
            f"3. `{waves.global_stack.stack}`.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.deploy_order", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--github", action="store_true", help="print name=<json> lines for $GITHUB_OUTPUT")
    mode.add_argument("--markdown", action="store_true", help="print the README's deploy order")
    mode.add_argument("--write", metavar="FILE", type=Path, help="replace the block between the markers in FILE")
    args = parser.parse_args(argv)
    try:
        waves = deploy_waves()
    except (config.ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.write is not None:
        return markers.write_into(args.write, WAVES_START, WAVES_END, render_markdown(waves))
    if args.github:
        print(github_outputs(waves))
    elif args.markdown:
        print(render_markdown(waves))
    else:
        print(json.dumps(as_dict(waves), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
