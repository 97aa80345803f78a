#!/usr/bin/env python3
"""Write a work pool's base job template with its defaults taken from the Terraform outputs.

    terraform -chdir=infra/terraform/examples/aws output -json stack > stack.json
    python infra/terraform/scripts/work_pool_template.py ecs stack.json -o ecs-template.json
    python infra/terraform/scripts/work_pool_template.py aws-batch stack.json -o batch-template.json
    prefect work-pool create interlinked-ecs --type ecs --base-job-template ecs-template.json
    prefect work-pool create interlinked-batch --type aws-batch --base-job-template batch-template.json

The template is the worker type's own default (what ``prefect work-pool
get-default-base-job-template --type TYPE`` prints); the defaults of its variables are set from the
stack output ``ecs_work_pool_job_variables`` (type ``ecs``) or ``batch_work_pool_job_variables``
(type ``aws-batch``), so no name is typed twice. ``STACK_JSON`` is the ``stack`` output of an example
(``terraform output -json stack``) or the root stack's outputs as one JSON object; ``-`` reads stdin.
Needs the project installed (prefect-aws for ``ecs``, interlinked's workers for ``aws-batch``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT_BY_TYPE = {
    "ecs": "ecs_work_pool_job_variables",
    "aws-batch": "batch_work_pool_job_variables",
}


class TemplateError(ValueError):
    """The outputs do not fit the worker type's template."""


def load_outputs(text: str) -> dict[str, Any]:
    """The stack outputs from `terraform output -json stack` (or `terraform output -json` of the root)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise TemplateError("the stack JSON is not an object")
    # `terraform output -json` (all outputs) wraps every value: {"name": {"value": ..., "type": ...}}.
    if data and all(isinstance(v, dict) and "value" in v and "type" in v for v in data.values()):
        data = {name: entry["value"] for name, entry in data.items()}
        if isinstance(data.get("stack"), dict):
            data = data["stack"]
    return data


def default_template(worker_type: str) -> dict[str, Any]:
    from prefect.workers.base import BaseWorker

    return BaseWorker.get_worker_class_from_type(worker_type).get_default_base_job_template()


def template_with_defaults(worker_type: str, outputs: dict[str, Any]) -> dict[str, Any]:
    if worker_type not in OUTPUT_BY_TYPE:
        raise TemplateError(f"unknown work pool type {worker_type!r} (one of {sorted(OUTPUT_BY_TYPE)})")
    name = OUTPUT_BY_TYPE[worker_type]
    variables = outputs.get(name)
    if not variables:
        raise TemplateError(
            f"the stack output {name} is missing or null (is that part of the stack enabled?)"
        )
    template = default_template(worker_type)
    properties = template["variables"]["properties"]
    unknown = sorted(set(variables) - set(properties))
    if unknown:
        raise TemplateError(f"{worker_type} work pools have no variables {unknown}")
    for key, value in variables.items():
        if value is not None:
            properties[key]["default"] = value
    return template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("type", choices=sorted(OUTPUT_BY_TYPE), help="work pool type")
    parser.add_argument("stack_json", help="`terraform output -json stack` saved to a file, or - for stdin")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.stack_json == "-" else Path(args.stack_json).read_text()
    try:
        template = template_with_defaults(args.type, load_outputs(text))
    except (TemplateError, json.JSONDecodeError) as error:
        print(f"work_pool_template: {error}", file=sys.stderr)
        return 2
    rendered = json.dumps(template, indent=2, sort_keys=True) + "\n"
    if args.output:
        args.output.write_text(rendered)
    else:
        sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
