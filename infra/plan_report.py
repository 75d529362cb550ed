"""What a reviewer without cloud credentials reads about a stack: the policy pack's verdict on every resource, and
what the change does (`infra.plan_diff`), as text, as Markdown for a pull-request comment, or as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra import offline
from infra.plan_diff import MISSING, PlanDiff

# GitHub refuses comment bodies over 65,536 characters; the rest of a long report is in the JSON artifact.
COMMENT_LIMIT = 60_000
_VALUE_CHARS = 160


@dataclass(frozen=True)
class ResourceVerdict:
    """Every rule of the pack on one resource: the violations each found (none: the rule passes)."""

    type: str
    name: str
    violations: dict[str, tuple[str, ...]]  # rule name -> violations, for every rule of the pack

    @property
    def passed(self) -> bool:
        return not any(self.violations.values())


@dataclass(frozen=True)
class StackReport:
    stack: str
    resources: int
    verdicts: tuple[ResourceVerdict, ...] | None  # None: the policy pack was not asked for
    diff: PlanDiff | None

    @property
    def passed(self) -> bool:
        return self.verdicts is None or all(v.passed for v in self.verdicts)


def resource_verdicts(graph: offline.Graph) -> tuple[ResourceVerdict, ...]:
    """The pack's verdicts (policy/rules.py, the functions `pulumi preview --policy-pack policy` runs) per resource."""
    from policy.rules import RULES  # the pack's rules; only the policy report needs them

    return tuple(
        ResourceVerdict(r.type, r.name, {rule.name: tuple(rule.check(r.type, r.inputs, graph.stack)) for rule in RULES})
        for r in graph.resources
    )


def as_json(reports: Sequence[StackReport]) -> dict[str, Any]:
    return {
        "passed": all(r.passed for r in reports),
        "stacks": [
            {
                "stack": r.stack,
                "resources": r.resources,
                "policy": None
                if r.verdicts is None
                else {
                    "passed": r.passed,
                    "resources": [
                        {"type": v.type, "name": v.name, "passed": v.passed, "violations": v.violations}
                        for v in r.verdicts
                    ],
                },
                "diff": None if r.diff is None else r.diff.as_json(),
            }
            for r in reports
        ],
    }


def _shown(value: Any) -> str:
    text = value if value == MISSING else json.dumps(value, default=str)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def _rule_counts(verdicts: Sequence[ResourceVerdict]) -> list[tuple[str, list[tuple[ResourceVerdict, str]]]]:
    rules = list(verdicts[0].violations) if verdicts else []
    return [(rule, [(v, why) for v in verdicts for why in v.violations[rule]]) for rule in rules]


def render_text(reports: Sequence[StackReport]) -> str:
    lines: list[str] = []
    for report in reports:
        if report.verdicts is not None:
            counts = _rule_counts(report.verdicts)
            lines.append(f"stack {report.stack}: {report.resources} resources against {len(counts)} policies")
            for rule, found in counts:
                lines.append(f"{'FAIL' if found else 'pass'}  {rule}")
                lines += [f"      {v.type}  {v.name}: {why}" for v, why in found]
            failing = sum(not v.passed for v in report.verdicts)
            lines.append(f"resources: {report.resources - failing} pass every policy, {failing} fail")
        if report.diff is not None:
            lines += _diff_text(report.diff)
    return "\n".join(lines)


def _diff_text(diff: PlanDiff) -> list[str]:
    lines = [f"{diff.head} against {diff.base}: {_counts(diff)}"]
    lines += [f"+ {r.type}  {r.name}" for r in diff.added]
    lines += [f"- {r.type}  {r.name}" for r in diff.removed]
    for r in diff.changed:
        lines.append(f"~ {r.type}  {r.name}")
        lines += [f"      {c.path}: {_shown(c.before)} -> {_shown(c.after)}" for c in r.changes]
    lines += [f"  output {c.path}: {_shown(c.before)} -> {_shown(c.after)}" for c in diff.outputs]
    return lines


def _counts(diff: PlanDiff) -> str:
    return (
        f"{len(diff.added)} to add, {len(diff.removed)} to remove, {len(diff.changed)} to change, "
        f"{diff.unchanged} unchanged, {len(diff.outputs)} outputs changed"
    )


def render_markdown(reports: Sequence[StackReport], title: str = "Offline plan") -> str:
    """One comment for every stack, within GitHub's size limit: long per-resource lists go first, then a cut."""
    for with_lists in (True, False):
        text = _markdown(reports, title, with_lists)
        if len(text) <= COMMENT_LIMIT:
            return text
    return text[:COMMENT_LIMIT] + "\n\n… cut to fit a comment; the job's artifact holds the whole report (JSON).\n"


def _markdown(reports: Sequence[StackReport], title: str, with_lists: bool) -> str:
    verdict = "✅ every stack passes the policy pack" if all(r.passed for r in reports) else "❌ policy violations"
    lines = [f"## {title}", ""]
    if any(r.verdicts is not None for r in reports):
        lines += [verdict, ""]
    for report in reports:
        lines += [f"### `{report.stack}` ({report.resources} resources)", ""]
        if report.verdicts is not None:
            lines += _policy_markdown(report.verdicts, with_lists)
        if report.diff is not None:
            lines += _diff_markdown(report.diff, with_lists)
    return "\n".join(lines).rstrip() + "\n"


def _policy_markdown(verdicts: Sequence[ResourceVerdict], with_lists: bool) -> list[str]:
    lines = ["| Policy | Verdict |", "| --- | --- |"]
    for rule, found in _rule_counts(verdicts):
        lines.append(f"| `{rule}` | {'❌ ' + str(len(found)) + ' violations' if found else '✅ pass'} |")
    violations = [(rule, v, why) for rule, found in _rule_counts(verdicts) for v, why in found]
    if violations:
        lines.append("")
        lines += [f"- ❌ `{rule}` on `{v.name}` (`{v.type}`): {why}" for rule, v, why in violations]
    failing = [v for v in verdicts if not v.passed]
    summary = f"{len(verdicts) - len(failing)} of {len(verdicts)} resources pass every policy"
    if with_lists:
        lines += ["", f"<details><summary>Verdict per resource: {summary}</summary>", ""]
        lines += [f"- {'✅' if v.passed else '❌'} `{v.name}` `{v.type}`" for v in verdicts]
        lines += ["", "</details>", ""]
    else:
        lines += ["", f"{summary} (the per-resource list is in the JSON report).", ""]
    return lines


def _diff_markdown(diff: PlanDiff, with_lists: bool) -> list[str]:
    lines = [f"**Changes against `{diff.base}`:** {_counts(diff)}", ""]
    if diff.is_empty:
        return [*lines, "No change.", ""]
    lines += ["| Action | Resource | Type |", "| --- | --- | --- |"]
    lines += [f"| add | `{r.name}` | `{r.type}` |" for r in diff.added]
    lines += [f"| remove | `{r.name}` | `{r.type}` |" for r in diff.removed]
    lines += [f"| change | `{r.name}` | `{r.type}` |" for r in diff.changed]
    lines.append("")
    changes = [(f"`{r.name}`", c) for r in diff.changed for c in r.changes]
    changes += [("output", c) for c in diff.outputs]
    if changes and with_lists:
        lines += ["<details><summary>Changed properties</summary>", ""]
        lines += [f"- {owner} `{c.path}`: {_md_value(c.before)} → {_md_value(c.after)}" for owner, c in changes]
        lines += ["", "</details>", ""]
    return lines


def _md_value(value: Any) -> str:
    if value == MISSING:
        return "_absent_"
    return "`" + _shown(value).replace("`", "'") + "`"
