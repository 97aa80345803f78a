"""`interlinked groups add NAME`: a group's own identity on the local stack's emulator.

The group's IAM user may list its own prefix, read and write its ``inputs/``, ``configs/`` and
``submissions/`` and read its ``results/`` — nothing of another group (NeuroCAAS's layout and
isolation). Its UserId is recorded in the group registry (``s3://{data}/groups/{group}.json``), so
a submit file that this identity writes under another group's prefix is refused. The command prints how to use the keys (environment variables and AWS profile lines).
On AWS, the Terraform module ``infra/terraform/modules/group`` makes the same user.
Exit codes: 0 done, 2 invalid name, 3 the stack or an AWS call failed.
"""

from __future__ import annotations

import argparse
import json
import os

from interlinked.commands.common import EXIT_INVALID, EXIT_STACK, report_error


def cmd_groups_add(args: argparse.Namespace) -> int:
    from interlinked.local import identities
    from interlinked.local.parts import stack_env
    from interlinked.settings import get_settings

    settings = get_settings()
    if not identities.GROUP_NAME.match(args.name):
        return report_error(
            f"group name {args.name!r}: use 1-41 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            EXIT_INVALID,
        )
    if not settings.emulator_enforce_iam:
        return report_error(
            "the emulator does not enforce IAM (INTERLINKED_EMULATOR_ENFORCE_IAM=false): "
            "a group identity would not be a boundary",
            EXIT_INVALID,
        )
    # The stack's admin keys (what `interlinked env` prints) unless the shell already has some.
    for name, value in stack_env(settings).items():
        os.environ.setdefault(name, value)
    try:
        group = identities.ensure_group(settings, args.name, args.bucket)
    except Exception as error:
        return report_error(
            f"could not create group {args.name!r}: {type(error).__name__}: {error}", EXIT_STACK
        )
    if args.json:
        print(json.dumps(group, indent=2))
        return 0
    bucket, prefix = group["bucket"], group["prefix"]
    print(f"group {args.name}: IAM user {group['user']}, s3://{bucket}/{prefix} only")
    print("  read/write: inputs/ configs/ submissions/ — read: results/ — list: its own prefix")
    print(
        f"  registered as group {args.name}'s identity (UserId {group['user_id']}) in "
        f"s3://{settings.data_bucket}/groups/{args.name}.json"
    )
    print("\n# use it in a shell:")
    print(f"export AWS_ACCESS_KEY_ID={group['AWS_ACCESS_KEY_ID']}")
    print(f"export AWS_SECRET_ACCESS_KEY={group['AWS_SECRET_ACCESS_KEY']}")
    print(f"export AWS_ENDPOINT_URL={settings.aws_endpoint_url}")
    print(f"export AWS_DEFAULT_REGION={settings.region}")
    print(
        f"\n# or as a profile (~/.aws/credentials and ~/.aws/config), then AWS_PROFILE=interlinked-{args.name}:"
    )
    print(f"[interlinked-{args.name}]")
    print(f"aws_access_key_id = {group['AWS_ACCESS_KEY_ID']}")
    print(f"aws_secret_access_key = {group['AWS_SECRET_ACCESS_KEY']}")
    print(f"[profile interlinked-{args.name}]")
    print(f"region = {settings.region}")
    print(f"endpoint_url = {settings.aws_endpoint_url}")
    print(f"\n# upload: aws s3 cp submit.json s3://{bucket}/{prefix}submissions/submit.json")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    groups = subparsers.add_parser("groups", help="per-group identities (S3 submissions)")
    sub = groups.add_subparsers(dest="groups_command", required=True)
    add = sub.add_parser(
        "add",
        help="create the group's IAM user on the local stack (its own prefix only) and print its keys",
    )
    add.add_argument("name", help="the group: the first segment of its S3 keys")
    add.add_argument("--bucket", help="the submissions bucket (default: the stack's analysis bucket)")
    add.add_argument("--json", action="store_true", help="print the user, bucket, prefix and keys as JSON")
    add.set_defaults(func=cmd_groups_add)
