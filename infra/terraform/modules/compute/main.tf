# ECS cluster + Prefect worker service, IAM roles, log groups and AWS Batch for flow runs.
#
# Roles:
#   execution role       ECS/Batch agent: pull the image, write logs, read the Prefect API key secret
#   worker task role     the Prefect ECS worker: register task definitions, run/stop tasks in this
#                        cluster, pass the two flow-run roles
#   flow-run task role   the flow runs (ECS tasks and Batch jobs): the buckets, queues and topics
#   service task roles   (services.tf) the optional long-running services: the aws-batch worker
#                        (submit/describe/terminate jobs on this queue), the event bridge (events
#                        queue) and the analysis service (work queue, work_results topic, data bucket)

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  create_security_group = length(var.security_group_ids) == 0
  security_group_ids    = local.create_security_group ? [aws_security_group.this[0].id] : var.security_group_ids

  worker_image = coalesce(var.worker_image, var.image)

  cluster_name = var.name_prefix

  # One log group per workload; the optional services (services.tf) add theirs.
  log_group_names = merge(
    {
      worker    = "/interlinked/${var.name_prefix}/prefect-worker"
      flow_runs = "/interlinked/${var.name_prefix}/flow-runs"
      batch     = "/interlinked/${var.name_prefix}/batch"
    },
    { for key, service in local.services : key => "/interlinked/${var.name_prefix}/${service.name}" },
  )

  # Environment of every long-running Prefect container (workers and services) before its own
  # variables: the API, a writable Prefect home and temp dir on the scratch volume (the root file
  # system is read-only), the region.
  service_base_environment = {
    PREFECT_API_URL = var.prefect_api_url
    PREFECT_HOME    = "/scratch/prefect"
    TMPDIR          = "/scratch/tmp"
    AWS_REGION      = local.region
  }
  # Workers also stop the infrastructure of runs cancelled before they started (Prefect's
  # worker-side cancellation is off by default).
  worker_base_environment = merge(local.service_base_environment, {
    PREFECT_WORKER_ENABLE_CANCELLATION = "true"
  })

  ecr_repository_arns = length(var.ecr_repository_arns) > 0 ? var.ecr_repository_arns : [
    "arn:${local.partition}:ecr:${local.region}:${local.account_id}:repository/*"
  ]

  # The ECS worker's job variable that injects the same secret into ECS flow-run tasks.
  ecs_secret_job_variables = {
    for name, arn in {
      prefect_api_key_secret_arn         = var.prefect_api_key_env_name == "PREFECT_API_KEY" ? var.prefect_api_key_secret_arn : null
      prefect_api_auth_string_secret_arn = var.prefect_api_key_env_name == "PREFECT_API_AUTH_STRING" ? var.prefect_api_key_secret_arn : null
    } : name => arn if arn != null
  }

  secret_env = var.prefect_api_key_secret_arn == null ? [] : [{
    name      = var.prefect_api_key_env_name
    valueFrom = var.prefect_api_key_secret_arn
  }]

  batch_is_fargate       = contains(["FARGATE", "FARGATE_SPOT"], var.batch_compute_type)
  batch_needs_instances  = var.enable_batch && !local.batch_is_fargate
  batch_service_role_arn = var.create_batch_service_role ? aws_iam_role.batch_service[0].arn : var.batch_service_role_arn
  batch_job_definition   = "${var.name_prefix}-flow-run"
  batch_flow_run_command = ["prefect", "flow-run", "execute"]
  batch_job_queue        = "${var.name_prefix}-flow-runs"

  batch_container = {
    image = var.image
    # What the aws-batch worker also sends as containerOverrides.command: the Prefect engine runs
    # the flow run named by PREFECT__FLOW_RUN_ID (an environment override of every submission).
    command          = local.batch_flow_run_command
    jobRoleArn       = aws_iam_role.flow_run.arn
    executionRoleArn = aws_iam_role.execution.arn
    resourceRequirements = [
      { type = "VCPU", value = var.batch_job_vcpu },
      { type = "MEMORY", value = tostring(var.batch_job_memory) },
    ]
    environment = [
      for name, value in merge(
        { PREFECT_API_URL = var.prefect_api_url, AWS_REGION = local.region },
        local.session_role_environment,
        var.flow_run_environment,
      ) : { name = name, value = value }
    ]
    secrets = local.secret_env
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this["batch"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "flow-run"
      }
    }
  }
  batch_fargate = {
    fargatePlatformConfiguration = { platformVersion = "LATEST" }
    networkConfiguration         = { assignPublicIp = var.assign_public_ip ? "ENABLED" : "DISABLED" }
  }
}

################################################################################
# Network
################################################################################

resource "aws_security_group" "this" {
  #checkov:skip=CKV2_AWS_5:Attached to the worker service, the Batch compute environment and flow-run tasks through local.security_group_ids (a conditional checkov cannot follow).
  count = local.create_security_group ? 1 : 0

  name        = "${var.name_prefix}-compute"
  description = "Egress-only security group of the interlinked Prefect worker, flow-run tasks and Batch jobs"
  vpc_id      = var.vpc_id

  dynamic "egress" {
    for_each = toset(var.security_group_egress_ports)

    content {
      description = "Outbound TCP ${egress.value}"
      from_port   = egress.value
      to_port     = egress.value
      protocol    = "tcp"
      cidr_blocks = var.security_group_egress_cidr_blocks
    }
  }

  tags = merge(var.tags, { Name = "${var.name_prefix}-compute" })

  lifecycle {
    precondition {
      condition     = var.vpc_id != null
      error_message = "vpc_id is required when security_group_ids is empty (a security group is created)."
    }
  }
}

################################################################################
# Log groups
################################################################################

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338:Retention is a cost decision of the deployer (var.log_retention_days, default 30 days); flow results and job logs are kept in S3.
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer managed key is optional (var.kms_key_arn, used by examples/aws).
  for_each = local.log_group_names

  name              = each.value
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = merge(var.tags, { Name = each.value })
}

################################################################################
# ECS cluster
################################################################################

resource "aws_ecs_cluster" "this" {
  name = local.cluster_name

  setting {
    name  = "containerInsights"
    value = var.container_insights ? "enabled" : "disabled"
  }

  tags = merge(var.tags, { Name = local.cluster_name })
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
    base              = 0
  }
}

################################################################################
# IAM: shared trust policy for ECS tasks (and Batch Fargate jobs)
################################################################################

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    sid     = "EcsTasksAssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# The customer managed key of the buckets and topics (kms_key_arn), when there is one: the roles'
# policies that read and write their objects take this statement as a source document.
data "aws_iam_policy_document" "use_key" {
  count = var.kms_key_arn == null ? 0 : 1

  statement {
    sid       = "UseKey"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
}

################################################################################
# IAM: execution role
################################################################################

resource "aws_iam_role" "execution" {
  name                 = "${var.name_prefix}-ecs-execution"
  description          = "ECS/Batch execution role of interlinked: image pull, logs, Prefect API key secret"
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_assume.json
  max_session_duration = 3600

  tags = merge(var.tags, { Name = "${var.name_prefix}-ecs-execution" })
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrAuthToken"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # GetAuthorizationToken has no resource-level permissions.
  }

  statement {
    sid    = "EcrPull"
    effect = "Allow"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = local.ecr_repository_arns
  }

  statement {
    sid       = "WriteLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for group in aws_cloudwatch_log_group.this : "${group.arn}:*"]
  }

  dynamic "statement" {
    for_each = var.prefect_api_key_secret_arn == null ? [] : [var.prefect_api_key_secret_arn]

    content {
      sid       = "ReadPrefectApiKey"
      effect    = "Allow"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "DecryptWithKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

################################################################################
# IAM: flow-run task role (ECS flow-run tasks and Batch jobs)
################################################################################

resource "aws_iam_role" "flow_run" {
  name                 = "${var.name_prefix}-flow-run"
  description          = "Task role of interlinked flow runs (ECS tasks, Batch jobs): buckets, queues, topics"
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_assume.json
  max_session_duration = 3600

  tags = merge(var.tags, { Name = "${var.name_prefix}-flow-run" })
}

data "aws_iam_policy_document" "flow_run" {
  # Use of the bucket key (kms_key_arn), when there is one.
  source_policy_documents = data.aws_iam_policy_document.use_key[*].json

  dynamic "statement" {
    for_each = length(var.bucket_arns) == 0 ? [] : [1]

    content {
      sid       = "ListBuckets"
      effect    = "Allow"
      actions   = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]
      resources = var.bucket_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.bucket_arns) == 0 ? [] : [1]

    content {
      sid    = "ReadWriteObjects"
      effect = "Allow"
      actions = [
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:GetObject",
        "s3:GetObjectTagging",
        "s3:ListMultipartUploadParts",
        "s3:PutObject",
        "s3:PutObjectTagging",
      ]
      resources = [for arn in var.bucket_arns : "${arn}/*"]
    }
  }

  # The group registry (submissions' writer check) is written by admins and modules/group only.
  dynamic "statement" {
    for_each = var.group_registry_bucket_arn == null ? [] : [var.group_registry_bucket_arn]

    content {
      sid       = "GroupRegistryReadOnly"
      effect    = "Deny"
      actions   = ["s3:DeleteObject", "s3:PutObject", "s3:PutObjectTagging"]
      resources = ["${statement.value}/groups/*"]
    }
  }

  dynamic "statement" {
    for_each = length(var.queue_arns) == 0 ? [] : [1]

    content {
      sid    = "UseQueues"
      effect = "Allow"
      actions = [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",
      ]
      resources = var.queue_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.topic_arns) == 0 ? [] : [1]

    content {
      sid       = "PublishTopics"
      effect    = "Allow"
      actions   = ["sns:GetTopicAttributes", "sns:Publish"]
      resources = var.topic_arns
    }
  }

  # Keeps the document valid when no resource was handed in.
  statement {
    sid       = "ReadOwnIdentity"
    effect    = "Allow"
    actions   = ["sts:GetCallerIdentity"]
    resources = ["*"] # GetCallerIdentity has no resource-level permissions.
  }
}

resource "aws_iam_role_policy" "flow_run" {
  name   = "flow-run"
  role   = aws_iam_role.flow_run.id
  policy = data.aws_iam_policy_document.flow_run.json
}

################################################################################
# IAM: session roles. A flow run assumes one of these for each script job or submission with a
# session policy naming that job's keys, so the job's own code reaches only what the session names
# and the role bounds every session. Each role is trusted by the flow-run role only, which has an
# assume policy per role; the flow runs are told each role's ARN in the variable their flow reads.
#   script_job  what a script job's code may reach (flows/script_jobs/scoped.py): its spec, its
#               script, its results/{id}/ and its log
#   submission  what a submission's analysis reads and writes with (flows/submissions/scoped.py):
#               the group's inputs/ and configs/ and the job's process_results/, bounded to the
#               analysis buckets' inputs/, configs/ and results/ areas (and the storage-bypass
#               locations given)
################################################################################

locals {
  script_job_prefixes = ["jobs/", "scripts/", "results/", "logs/"]

  # Every session role the module knows; the created ones (create) are local.session_roles.
  session_role_specs = {
    script_job = {
      create      = var.create_script_job_role
      name        = "script-job"
      description = "What a script job's code may reach: script-job keys of the data bucket, narrowed per job by a session policy"
      env         = "INTERLINKED_SCRIPT_JOB_ROLE_ARN"
      assume_sid  = "AssumeScriptJobRole"
      policy      = one(data.aws_iam_policy_document.script_job[*].json)
    }
    submission = {
      create      = var.create_submission_role
      name        = "submission"
      description = "What a submission's analysis reads and writes: groups' inputs/, configs/ and results/ of the analysis buckets, narrowed per submission by a session policy"
      env         = "INTERLINKED_SUBMISSION_ROLE_ARN"
      assume_sid  = "AssumeSubmissionRole"
      policy      = one(data.aws_iam_policy_document.submission[*].json)
    }
  }
  session_roles = { for key, role in local.session_role_specs : key => role if role.create }
  # INTERLINKED_*_ROLE_ARN of every session role, in the flow runs' environment (Batch and ECS).
  session_role_environment = { for key, role in local.session_roles : role.env => aws_iam_role.session[key].arn }
}

data "aws_iam_policy_document" "session_assume" {
  statement {
    sid     = "FlowRunsAssume"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.flow_run.arn]
    }
  }
}

resource "aws_iam_role" "session" {
  for_each = local.session_roles

  name                 = "${var.name_prefix}-${each.value.name}"
  description          = each.value.description
  assume_role_policy   = data.aws_iam_policy_document.session_assume.json
  max_session_duration = 3600

  tags = merge(var.tags, { Name = "${var.name_prefix}-${each.value.name}" })
}

resource "aws_iam_role_policy" "session" {
  for_each = local.session_roles

  name   = each.value.name
  role   = aws_iam_role.session[each.key].id
  policy = each.value.policy
}

# One assume policy on the flow-run role per session role ("assume-<name>"), naming only that role.
data "aws_iam_policy_document" "flow_run_assume_session" {
  for_each = local.session_roles

  statement {
    sid       = each.value.assume_sid
    effect    = "Allow"
    actions   = ["sts:AssumeRole"]
    resources = [aws_iam_role.session[each.key].arn]
  }
}

resource "aws_iam_role_policy" "flow_run_assume_session" {
  for_each = local.session_roles

  name   = "assume-${each.value.name}"
  role   = aws_iam_role.flow_run.id
  policy = data.aws_iam_policy_document.flow_run_assume_session[each.key].json
}

# The roles, their policies and the flow-run role's assume policies were count-indexed per role
# before; their state moves to the map (same names and documents, so an upgrade changes nothing).
moved {
  from = aws_iam_role.script_job[0]
  to   = aws_iam_role.session["script_job"]
}

moved {
  from = aws_iam_role_policy.script_job[0]
  to   = aws_iam_role_policy.session["script_job"]
}

moved {
  from = aws_iam_role.submission[0]
  to   = aws_iam_role.session["submission"]
}

moved {
  from = aws_iam_role_policy.submission[0]
  to   = aws_iam_role_policy.session["submission"]
}

moved {
  from = aws_iam_role_policy.flow_run_assume_script_job[0]
  to   = aws_iam_role_policy.flow_run_assume_session["script_job"]
}

moved {
  from = aws_iam_role_policy.flow_run_assume_submission[0]
  to   = aws_iam_role_policy.flow_run_assume_session["submission"]
}

# Permissions of the script-job role: the data bucket's script-job keys (and the key).
data "aws_iam_policy_document" "script_job" {
  count = var.create_script_job_role ? 1 : 0

  # Use of the bucket key (kms_key_arn), when there is one.
  source_policy_documents = data.aws_iam_policy_document.use_key[*].json

  statement {
    sid       = "ScriptJobKeys"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = [for prefix in local.script_job_prefixes : "${var.script_job_bucket_arn}/${prefix}*"]
  }
}

# Permissions of the submission role: the analysis buckets' group areas (and the key).
data "aws_iam_policy_document" "submission" {
  count = var.create_submission_role ? 1 : 0

  # Use of the bucket key (kms_key_arn), when there is one.
  source_policy_documents = data.aws_iam_policy_document.use_key[*].json

  statement {
    sid       = "ListGroupInputs"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = var.submission_bucket_arns

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["*/inputs/*"]
    }
  }

  statement {
    sid       = "ReadGroupInputs"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = flatten([for arn in var.submission_bucket_arns : ["${arn}/*/inputs/*", "${arn}/*/configs/*"]])
  }

  statement {
    sid       = "WriteResults"
    effect    = "Allow"
    actions   = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    resources = concat([for arn in var.submission_bucket_arns : "${arn}/*/results/*"], var.submission_result_arns)
  }
}

################################################################################
# IAM: worker task role (launches flow runs)
################################################################################

resource "aws_iam_role" "worker" {
  name                 = "${var.name_prefix}-prefect-worker"
  description          = "Task role of the interlinked Prefect ECS worker: launch flow-run tasks in the cluster"
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_assume.json
  max_session_duration = 3600

  tags = merge(var.tags, { Name = "${var.name_prefix}-prefect-worker" })
}

data "aws_iam_policy_document" "worker" {
  #checkov:skip=CKV_AWS_111:ecs:RegisterTaskDefinition/DeregisterTaskDefinition have no resource-level permissions; the ECS worker registers one task definition per deployment.
  #checkov:skip=CKV_AWS_356:Only actions without resource-level permissions (task-definition registration, Describe*/List*) use "*".
  statement {
    sid    = "ManageTaskDefinitions"
    effect = "Allow"
    actions = [
      "ecs:DeregisterTaskDefinition",
      "ecs:DescribeTaskDefinition",
      "ecs:ListTaskDefinitions",
      "ecs:RegisterTaskDefinition",
    ]
    resources = ["*"] # No resource-level permissions for these actions.
  }

  statement {
    sid       = "RunTasksInCluster"
    effect    = "Allow"
    actions   = ["ecs:RunTask"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task-definition/*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }

  statement {
    sid       = "ManageTasksInCluster"
    effect    = "Allow"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask", "ecs:TagResource"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${local.cluster_name}/*"]
  }

  statement {
    sid       = "DescribeCluster"
    effect    = "Allow"
    actions   = ["ecs:DescribeClusters"]
    resources = [aws_ecs_cluster.this.arn]
  }

  statement {
    sid       = "PassFlowRunRoles"
    effect    = "Allow"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.flow_run.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    sid    = "DescribeNetwork"
    effect = "Allow"
    actions = [
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeSubnets",
      "ec2:DescribeVpcs",
    ]
    resources = ["*"] # Describe* has no resource-level permissions.
  }

  statement {
    sid       = "StreamFlowRunLogs"
    effect    = "Allow"
    actions   = ["logs:GetLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this["flow_runs"].arn}:*"]
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "prefect-worker"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

################################################################################
# Prefect worker service
################################################################################

resource "aws_ecs_task_definition" "worker" {
  count = var.enable_worker_service ? 1 : 0

  family                   = "${var.name_prefix}-prefect-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.worker_cpu
  memory                   = var.worker_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.worker.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Scratch space for a read-only root file system (Prefect home and temp files).
  volume {
    name = "scratch"
  }

  container_definitions = jsonencode([{
    name                   = "prefect-worker"
    image                  = local.worker_image
    essential              = true
    readonlyRootFilesystem = true
    command                = ["prefect", "worker", "start", "--pool", var.worker_pool_name, "--type", "ecs"]

    environment = [
      for name, value in merge(
        local.worker_base_environment,
        var.worker_environment,
      ) : { name = name, value = value }
    ]
    secrets = local.secret_env

    mountPoints = [{
      sourceVolume  = "scratch"
      containerPath = "/scratch"
      readOnly      = false
    }]

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this["worker"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "worker"
      }
    }
  }])

  tags = merge(var.tags, { Name = "${var.name_prefix}-prefect-worker" })
}

resource "aws_ecs_service" "worker" {
  count = var.enable_worker_service ? 1 : 0

  name                               = "${var.name_prefix}-prefect-worker"
  cluster                            = aws_ecs_cluster.this.arn
  task_definition                    = aws_ecs_task_definition.worker[0].arn
  desired_count                      = var.worker_desired_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = local.security_group_ids
    assign_public_ip = var.assign_public_ip
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  tags = merge(var.tags, { Name = "${var.name_prefix}-prefect-worker" })

  depends_on = [aws_iam_role_policy.execution, aws_iam_role_policy.worker]
}

################################################################################
# AWS Batch: flow runs
################################################################################

data "aws_iam_policy_document" "batch_assume" {
  count = var.enable_batch && var.create_batch_service_role ? 1 : 0

  statement {
    sid     = "BatchAssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["batch.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "batch_service" {
  count = var.enable_batch && var.create_batch_service_role ? 1 : 0

  name                 = "${var.name_prefix}-batch-service"
  description          = "AWS Batch service role of the interlinked compute environment"
  assume_role_policy   = data.aws_iam_policy_document.batch_assume[0].json
  max_session_duration = 3600

  tags = merge(var.tags, { Name = "${var.name_prefix}-batch-service" })
}

resource "aws_iam_role_policy_attachment" "batch_service" {
  count = var.enable_batch && var.create_batch_service_role && var.attach_aws_managed_policies ? 1 : 0

  role       = aws_iam_role.batch_service[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSBatchServiceRole"
}

data "aws_iam_policy_document" "ec2_assume" {
  count = local.batch_needs_instances ? 1 : 0

  statement {
    sid     = "Ec2AssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "batch_instance" {
  count = local.batch_needs_instances ? 1 : 0

  name                 = "${var.name_prefix}-batch-instance"
  description          = "ECS container instance role of the interlinked Batch EC2/Spot compute environment"
  assume_role_policy   = data.aws_iam_policy_document.ec2_assume[0].json
  max_session_duration = 3600

  tags = merge(var.tags, { Name = "${var.name_prefix}-batch-instance" })
}

resource "aws_iam_role_policy_attachment" "batch_instance" {
  count = local.batch_needs_instances && var.attach_aws_managed_policies ? 1 : 0

  role       = aws_iam_role.batch_instance[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "batch_instance" {
  count = local.batch_needs_instances ? 1 : 0

  name = "${var.name_prefix}-batch-instance"
  role = aws_iam_role.batch_instance[0].name

  tags = merge(var.tags, { Name = "${var.name_prefix}-batch-instance" })
}

resource "aws_batch_compute_environment" "this" {
  count = var.enable_batch ? 1 : 0

  compute_environment_name = "${var.name_prefix}-${lower(replace(var.batch_compute_type, "_", "-"))}"
  type                     = "MANAGED"
  state                    = "ENABLED"
  service_role             = local.batch_service_role_arn

  compute_resources {
    type               = var.batch_compute_type
    max_vcpus          = var.batch_max_vcpus
    subnets            = var.subnet_ids
    security_group_ids = local.security_group_ids

    # EC2 / Spot only (Fargate rejects these).
    min_vcpus           = local.batch_is_fargate ? null : 0
    instance_type       = local.batch_is_fargate ? null : var.batch_instance_types
    instance_role       = local.batch_needs_instances ? aws_iam_instance_profile.batch_instance[0].arn : null
    allocation_strategy = local.batch_is_fargate ? null : (var.batch_compute_type == "SPOT" ? "SPOT_PRICE_CAPACITY_OPTIMIZED" : "BEST_FIT_PROGRESSIVE")
    bid_percentage      = var.batch_compute_type == "SPOT" ? var.batch_spot_bid_percentage : null

    dynamic "ec2_configuration" {
      for_each = local.batch_is_fargate ? [] : [1]

      content {
        image_type = "ECS_AL2023"
      }
    }
  }

  tags = merge(var.tags, { Name = "${var.name_prefix}-${lower(var.batch_compute_type)}" })

  depends_on = [aws_iam_role_policy_attachment.batch_service, aws_iam_role_policy_attachment.batch_instance]
}

resource "aws_batch_job_queue" "this" {
  count = var.enable_batch ? 1 : 0

  name     = local.batch_job_queue
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.this[0].arn
  }

  tags = merge(var.tags, { Name = local.batch_job_queue })
}

resource "aws_batch_job_definition" "flow_run" {
  count = var.enable_batch ? 1 : 0

  name                  = local.batch_job_definition
  type                  = "container"
  platform_capabilities = [local.batch_is_fargate ? "FARGATE" : "EC2"]
  propagate_tags        = true

  retry_strategy {
    attempts = var.batch_job_attempts

    # Retry infrastructure losses (Spot reclaim, host gone); an application failure ends the job.
    evaluate_on_exit {
      on_status_reason = "Host EC2*"
      action           = "RETRY"
    }

    evaluate_on_exit {
      on_reason = "*"
      action    = "EXIT"
    }
  }

  timeout {
    attempt_duration_seconds = var.batch_job_timeout_seconds
  }

  # The submitter passes the flow run id as containerOverrides.environment PREFECT__FLOW_RUN_ID.
  container_properties = local.batch_is_fargate ? jsonencode(merge(local.batch_container, local.batch_fargate)) : jsonencode(local.batch_container)

  tags = merge(var.tags, { Name = local.batch_job_definition })
}
