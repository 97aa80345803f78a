"""IAM enforcement inside the emulator process (imports moto; used by :mod:`.server` only).

moto checks every request's signature and the caller's IAM policies once
``moto.settings.INITIAL_NO_AUTH_ACTION_COUNT`` is exceeded; it reads that module attribute on each
request, so setting it here (in-process) is enough. With enforcement on:

- the stack's well-known keys (``AWS_ACCESS_KEY_ID=test``, what ``interlinked env`` prints and what
  tests and the CLI use) belong to the IAM user :data:`ADMIN_USER` with an allow-all policy — the
  developer stays admin, like an AWS admin profile. It is (re)created at every start, after the
  saved state is restored, so a state saved without it still works;
- everything else (the services' users, the script-job role, the groups' users) is ordinary IAM
  state, created through the IAM API by ``up`` / ``groups add`` and kept by the snapshots.

Presigned URLs (query-string signatures), which moto cannot check, are let through unchecked.

**Who wrote an object**: S3's event notifications on AWS carry ``userIdentity.principalId``, the
unique id of the identity whose request caused the event (``AWS:<UserId>`` for an IAM user,
``AWS:<RoleId>:<session name>`` for an assumed role); moto's have none. :func:`track_writers` adds
it: the auth step (:func:`_check_action_permitted`, after the signature check) notes the request's
caller in a thread-local (one request = one thread of the server; reset at the start of each
request by :func:`forget_caller`), and every S3 notification built while the request runs gets that
caller. A presigned request is attributed to the owner of the key id in its query string (not
checked, as its signature is not); a request that was not authenticated (enforcement off) to the
admin user.
Wildcards in policies match as on AWS (moto's matcher does not escape ``.`` and the like).
Two gaps of moto's evaluator that the boundaries need are closed here, with moto's own statement
evaluator doing the matching:

- **session policies**: moto ignores the ``Policy`` given to ``AssumeRole``; AWS grants only what
  both the role's policies *and* the session policy allow — :func:`_check_action_permitted` adds
  that intersection;
- **``s3:prefix`` on ListBucket**: moto evaluates only ``StringEquals`` conditions (and without the
  request's values); a statement whose only condition is ``StringLike``/``StringEquals`` on
  ``s3:prefix`` is kept when the request's ``prefix`` matches one of its patterns, and dropped
  otherwise, as AWS does.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("interlinked.emulator")

ADMIN_USER = "interlinked-admin"
ADMIN_ACCESS_KEY = ("test", "test")  # = interlinked.local.parts.LOCAL_AWS_CREDENTIALS
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
_PREFIX_CONDITIONS = ("StringLike", "StringEquals")
_CALLER = threading.local()  # .principal: the principalId of this thread's request, once known


def ensure_admin(account_id: str | None = None) -> None:
    """The admin user owning the well-known keys exists (idempotent; in moto's backend directly)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import AccessKey, iam_backends

    backend = iam_backends[account_id or DEFAULT_ACCOUNT_ID]["aws"]
    try:
        user = backend.get_user(ADMIN_USER)
    except Exception:
        user = backend.create_user(region_name="us-east-1", user_name=ADMIN_USER, path="/", tags=[])
    backend.put_user_policy(ADMIN_USER, "admin", json.dumps(ADMIN_POLICY))
    key_id, secret = ADMIN_ACCESS_KEY
    if not any(key.access_key_id == key_id for key in user.access_keys):
        key = AccessKey(ADMIN_USER, prefix="AKIA", account_id=backend.account_id)
        key.access_key_id, key.secret_access_key = key_id, secret
        user.access_keys.append(key)
        backend.access_keys[key.physical_resource_id] = key


def _session_policy(access_key: Any) -> str | None:
    """The session policy of an assumed-role key (None for users and for sessions without one)."""
    from moto.iam.access_control import AssumedRoleAccessKey
    from moto.sts.models import sts_backends

    if not isinstance(access_key, AssumedRoleAccessKey):
        return None
    for role in sts_backends[access_key.account_id][access_key.partition].assumed_roles:
        if role.access_key_id == access_key._access_key_id:
            return role.policy or None
    return None


def _request_prefix(request: Any) -> str | None:
    """The ``prefix`` query parameter of the request (ListObjects/ListObjectsV2), '' when absent."""
    query = parse_qs(urlsplit(request._path).query, keep_blank_values=True)
    return query.get("prefix", [""])[0]


def _resolve_prefix_conditions(document: Any, action: str, prefix: str | None) -> dict:
    """The policy with ``s3:prefix`` conditions decided for this request (see the module docstring)."""
    from moto.iam.access_control import IAMPolicyStatement

    policy = copy.deepcopy(json.loads(document) if isinstance(document, str) else document)
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    kept = []
    for statement in statements:
        condition = statement.get("Condition")
        if not condition:
            kept.append(statement)
            continue
        keys = {(operator, key) for operator, values in condition.items() for key in values}
        if not all(op in _PREFIX_CONDITIONS and key == "s3:prefix" for op, key in keys):
            kept.append(statement)  # left to moto (which denies what it cannot evaluate)
            continue
        if action != "s3:ListBucket" or prefix is None:
            continue
        matched = True
        for operator, values in condition.items():
            patterns = values["s3:prefix"]
            patterns = patterns if isinstance(patterns, list) else [patterns]
            if operator == "StringEquals":
                matched &= prefix in patterns
            else:
                matched &= any(IAMPolicyStatement._match(p, prefix) for p in patterns)
        if matched:
            kept.append({k: v for k, v in statement.items() if k != "Condition"})
    policy["Statement"] = kept
    return policy


def _check_action_permitted(self: Any, resource: str) -> None:
    """moto's check (identity policies, explicit denies, role trust), plus session policies and
    ``s3:prefix`` conditions."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    _note_caller(self._access_key)
    if self._action == "sts:GetCallerIdentity":
        return
    prefix = _request_prefix(self) if self._action == "s3:ListBucket" else None
    permitted = False
    for policy in self._access_key.collect_policies():
        document = IAMPolicy(policy)._policy_json  # moto's reading of inline and managed policies
        result = IAMPolicy(
            json.dumps(_resolve_prefix_conditions(document, self._action, prefix))
        ).is_action_permitted(self._action, resource)
        if result == PermissionResult.DENIED:
            self._raise_access_denied()
        permitted = permitted or result == PermissionResult.PERMITTED
    if self._is_assuming_role_operation(resource):
        permitted = permitted and self._check_role_trust_relationship(resource)
    session = _session_policy(self._access_key)
    if permitted and session is not None:
        result = IAMPolicy(
            json.dumps(_resolve_prefix_conditions(session, self._action, prefix))
        ).is_action_permitted(self._action, resource)
        permitted = result == PermissionResult.PERMITTED
    if not permitted:
        self._raise_access_denied()


def _match(pattern: str, string: str) -> Any:
    """IAM's wildcard match: ``*`` any run of characters, ``?`` one, everything else literal
    (moto's own turns the pattern into a regex unescaped, so a ``.`` in a policy matches anything)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, string, flags=re.DOTALL)


def _allow_presigned(check: Any) -> Any:
    """moto cannot read query-string (presigned) signatures and fails on them: such a request is
    let through unchecked (the analysis service hands out presigned result URLs)."""

    def authenticate(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        query = self.querystring
        presigned = "X-Amz-Signature" in query or ("Signature" in query and "AWSAccessKeyId" in query)
        if "Authorization" not in self.headers and presigned:
            key_id = query.get("AWSAccessKeyId") or query.get("X-Amz-Credential") or [""]
            owner = principal_of_key(self.current_account, key_id[0].split("/")[0])
            _CALLER.principal = owner or ""
            return  # SigV4 (X-Amz-Signature) or SigV2 (AWSAccessKeyId, Signature, Expires) query strings
        check(self, iam_request_cls, resource)

    return authenticate


# ---- the writer of an object, in S3's notifications ------------------------------------------------


def forget_caller() -> None:
    """A new request starts on this thread: no caller known yet."""
    _CALLER.principal = None


def _admin_principal(account_id: str | None = None) -> str:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    return "AWS:" + iam_backends[account_id or DEFAULT_ACCOUNT_ID]["aws"].get_user(ADMIN_USER).id


def _note_caller(access_key: Any) -> None:
    """Remember the authenticated caller of this thread's request, in AWS's principalId format."""
    from moto.iam.access_control import AssumedRoleAccessKey

    try:
        if isinstance(access_key, AssumedRoleAccessKey):
            role = access_key.backend.get_role(access_key._owner_role_name)
            _CALLER.principal = f"AWS:{role.id}:{access_key._session_name}"
        else:
            _CALLER.principal = "AWS:" + access_key.backend.get_user(access_key._owner_user_name).id
    except Exception as error:  # a role or user deleted while its key is in use: unknown
        log.warning("cannot name the caller of this request: %s", error)
        _CALLER.principal = ""  # authenticated, but not nameable: the notification names nobody


def principal_of_key(account_id: str, key_id: str) -> str | None:
    """The principalId of the owner of an access key id (an IAM user's key or an assumed-role
    session's), without checking any signature; None when no identity has that key."""
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    backend = iam_backends[account_id]["aws"]
    for user in backend.users.values():
        if any(key.access_key_id == key_id for key in user.access_keys):
            return f"AWS:{user.id}"
    for session in sts_backends[account_id]["aws"].assumed_roles:
        if session.access_key_id == key_id:
            try:
                return f"AWS:{backend.get_role_by_arn(session.role_arn).id}:{session.session_name}"
            except Exception:
                return None
    return None


def current_principal(account_id: str | None = None) -> str | None:
    """The principalId of this thread's request: its authenticated caller; the admin user's when
    the request was not authenticated (enforcement off); None when its caller cannot be named."""
    principal = getattr(_CALLER, "principal", None)
    if principal is not None:
        return principal or None
    try:
        return _admin_principal(account_id)
    except Exception:
        return None


def _with_writer(build: Any) -> Any:
    """moto's S3 notification builder, plus ``userIdentity.principalId`` as AWS sends it."""

    def build_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict:
        event = build(event_name, bucket, key, notification_id)
        principal = current_principal(getattr(bucket, "account_id", None))
        for record in event.get("Records", []):
            if principal:
                record["userIdentity"] = {"principalId": principal}
        return event

    return build_event


def track_writers() -> None:
    """S3 notifications name the identity whose request caused them (module docstring)."""
    from moto.s3 import notifications

    if not getattr(notifications._get_s3_event, "_interlinked_writer", False):
        notifications._get_s3_event = _with_writer(notifications._get_s3_event)
        notifications._get_s3_event._interlinked_writer = True


def enable(enforce: bool) -> None:
    """Turn enforcement on (or leave moto's default, none) for this process."""
    if not enforce:
        log.info("IAM enforcement off (INTERLINKED_EMULATOR_ENFORCE_IAM=false): any keys are accepted")
        return
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMPolicyStatement, IAMRequestBase

    ensure_admin()
    IAMRequestBase.check_action_permitted = _check_action_permitted
    IAMPolicyStatement._match = staticmethod(_match)
    ActionAuthenticatorMixin._authenticate_and_authorize_action = _allow_presigned(
        ActionAuthenticatorMixin._authenticate_and_authorize_action
    )
    ActionAuthenticatorMixin.request_count = 0
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    log.info("IAM enforcement on: signatures and policies are checked; `test`/`test` is %s", ADMIN_USER)
