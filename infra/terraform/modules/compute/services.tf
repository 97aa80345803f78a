# Optional long-running ECS services on the cluster, each with its own task role (least privilege),
# log group and the scratch volume of the read-only root file system:
#
#   batch_worker   `prefect worker start --pool <batch_worker_pool_name> --type aws-batch`: submits
#                  every flow run of the Batch pool as a job to this module's queue/definition,
#                  follows it, terminates it on cancellation (interlinked/workers/batch.py)
#   bridge         `python -m interlinked.bridge`: the events-queue consumer, the long-running
#                  alternative to the event-bridge Lambda (modules/bridge)
#   analysis       `python -m flows.analysis.service`: the warm analysis service (work FIFO queue ->
#                  work_results topic, data bucket, prepare-experiment flow runs)
#
# Every container gets PREFECT_API_URL and the Prefect API key secret (as the ECS worker does).

locals {
  # null entries are services that are switched off.
  all_services = {
    batch_worker = !(var.enable_batch && var.enable_batch_worker_service) ? null : {
      name          = "prefect-batch-worker"
      description   = "interlinked Prefect aws-batch worker (pool ${var.batch_worker_pool_name})"
      command       = ["prefect", "worker", "start", "--pool", var.batch_worker_pool_name, "--type", "aws-batch"]
      environment   = merge(local.worker_base_environment, var.batch_worker_environment)
      cpu           = var.batch_worker_cpu
      memory        = var.batch_worker_memory
      desired_count = var.batch_worker_desired_count
    }
    bridge_service = var.bridge_service == null ? null : {
      name        = "event-bridge-service"
      description = "interlinked event bridge (events queue -> Prefect flow runs) as an ECS service"
      command     = ["python", "-m", "interlinked.bridge"]
      environment = merge(
        local.service_base_environment,
        {
          INTERLINKED_EVENTS_QUEUE_URL   = var.bridge_service.events_queue_url
          INTERLINKED_STATE_DIR          = "/scratch/state"
          INTERLINKED_BRIDGE_STATUS_FILE = "/scratch/bridge-status.json"
        },
        var.bridge_service.environment,
      )
      cpu           = var.bridge_service.cpu
      memory        = var.bridge_service.memory
      desired_count = var.bridge_service.desired_count
    }
    analysis_service = var.analysis_service == null ? null : {
      name        = "analysis-service"
      description = "interlinked analysis service (work queue -> work_results topic) as an ECS service"
      command     = ["python", "-m", "flows.analysis.service"]
      environment = merge(
        local.service_base_environment,
        {
          INTERLINKED_ANALYSIS_QUEUE_URL          = var.analysis_service.work_queue_url
          INTERLINKED_ANALYSIS_TOPIC_ARN          = var.analysis_service.work_results_topic_arn
          INTERLINKED_ANALYSIS_DATA_BUCKET        = var.analysis_service.data_bucket_name
          INTERLINKED_ANALYSIS_PREPARE_DEPLOYMENT = var.analysis_service.prepare_deployment
          INTERLINKED_ANALYSIS_WORKERS            = tostring(var.analysis_service.workers)
          INTERLINKED_ANALYSIS_STATUS_FILE        = "/scratch/analysis-status.json"
          INTERLINKED_STATE_DIR                   = "/scratch/state"
        },
        var.analysis_service.environment,
      )
      cpu           = var.analysis_service.cpu
      memory        = var.analysis_service.memory
      desired_count = var.analysis_service.desired_count
    }
  }
  services = { for key, service in local.all_services : key => service if service != null }

  service_policies = {
    batch_worker     = try(data.aws_iam_policy_document.batch_worker[0].json, null)
    bridge_service   = try(data.aws_iam_policy_document.bridge_service[0].json, null)
    analysis_service = try(data.aws_iam_policy_document.analysis_service[0].json, null)
  }

  batch_job_definition_arns = [
    "arn:${local.partition}:batch:${local.region}:${local.account_id}:job-definition/${local.batch_job_definition}",
    "arn:${local.partition}:batch:${local.region}:${local.account_id}:job-definition/${local.batch_job_definition}:*",
  ]
  batch_job_arns = "arn:${local.partition}:batch:${local.region}:${local.account_id}:job/*"
}

################################################################################
# IAM: what each service may do
################################################################################

data "aws_iam_policy_document" "batch_worker" {
  count = var.enable_batch && var.enable_batch_worker_service ? 1 : 0

  statement {
    sid       = "SubmitFlowRunJobs"
    effect    = "Allow"
    actions   = ["batch:SubmitJob"]
    resources = concat([aws_batch_job_queue.this[0].arn], local.batch_job_definition_arns)
  }

  # SubmitJob with tags (the flow run's labels) is authorized as TagResource on the new job.
  statement {
    sid       = "TagSubmittedJobs"
    effect    = "Allow"
    actions   = ["batch:TagResource"]
    resources = [local.batch_job_arns]

    condition {
      test     = "StringEquals"
      variable = "batch:CreateAction"
      values   = ["SubmitJob"]
    }
  }

  statement {
    sid       = "TerminateJobs"
    effect    = "Allow"
    actions   = ["batch:TerminateJob"]
    resources = [local.batch_job_arns]
  }

  statement {
    sid       = "DescribeJobs"
    effect    = "Allow"
    actions   = ["batch:DescribeJobs"]
    resources = ["*"] # DescribeJobs has no resource-level permissions.
  }
}

data "aws_iam_policy_document" "bridge_service" {
  count = var.bridge_service == null ? 0 : 1

  # Receive, delete, delay a retry, read the redrive policy, and send again a message that failed
  # only because the Prefect API was busy (a requeue keeps its identity).
  statement {
    sid    = "ConsumeEventsQueue"
    effect = "Allow"
    actions = [
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:ReceiveMessage",
      "sqs:SendMessage",
    ]
    resources = [var.bridge_service.events_queue_arn]
  }

  # Messages that cannot succeed go to the queue's DLQ with the reason attached.
  statement {
    sid       = "WriteEventsDlq"
    effect    = "Allow"
    actions   = ["sqs:GetQueueUrl", "sqs:SendMessage"]
    resources = [var.bridge_service.dead_letter_queue_arn]
  }
}

data "aws_iam_policy_document" "analysis_service" {
  count = var.analysis_service == null ? 0 : 1

  # Use of the bucket key (kms_key_arn), when there is one.
  source_policy_documents = data.aws_iam_policy_document.use_key[*].json

  statement {
    sid    = "ConsumeWorkQueue"
    effect = "Allow"
    actions = [
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:ReceiveMessage",
    ]
    resources = [var.analysis_service.work_queue_arn]
  }

  # A message that is not a task is moved to the work queue's DLQ with the reason attached.
  statement {
    sid       = "WriteWorkDlq"
    effect    = "Allow"
    actions   = ["sqs:GetQueueUrl", "sqs:SendMessage"]
    resources = [var.analysis_service.dead_letter_queue_arn]
  }

  statement {
    sid       = "PublishWorkResults"
    effect    = "Allow"
    actions   = ["sns:Publish"]
    resources = [var.analysis_service.work_results_topic_arn]
  }

  # Listing tells a missing experiment (404) from a forbidden one, and checks PrepareExperiment sources.
  statement {
    sid       = "ListDataBucket"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.analysis_service.data_bucket_arn]
  }

  statement {
    sid     = "ReadExperimentsAndRecords"
    effect  = "Allow"
    actions = ["s3:GetObject"]
    resources = [
      for prefix in ["experiments/", "analysis-cache/", "analysis-responses/"] :
      "${var.analysis_service.data_bucket_arn}/${prefix}*"
    ]
  }

  statement {
    sid     = "WriteCacheAndRecords"
    effect  = "Allow"
    actions = ["s3:PutObject"]
    resources = [
      for prefix in ["analysis-cache/", "analysis-responses/"] :
      "${var.analysis_service.data_bucket_arn}/${prefix}*"
    ]
  }
}

################################################################################
# IAM: one task role per service
################################################################################

resource "aws_iam_role" "service" {
  for_each = local.services

  name                 = "${var.name_prefix}-${each.value.name}"
  description          = "Task role of the ${each.value.description}"
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_assume.json
  max_session_duration = 3600

  tags = merge(var.tags, { Name = "${var.name_prefix}-${each.value.name}" })
}

resource "aws_iam_role_policy" "service" {
  for_each = local.services

  name   = each.value.name
  role   = aws_iam_role.service[each.key].id
  policy = local.service_policies[each.key]
}

################################################################################
# Task definitions and services
################################################################################

resource "aws_ecs_task_definition" "service" {
  for_each = local.services

  family                   = "${var.name_prefix}-${each.value.name}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.service[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Scratch space for a read-only root file system (Prefect home, status files, temp files).
  volume {
    name = "scratch"
  }

  container_definitions = jsonencode([{
    name                   = each.value.name
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    command                = each.value.command
    environment            = [for name, value in each.value.environment : { name = name, value = value }]
    secrets                = local.secret_env

    mountPoints = [{
      sourceVolume  = "scratch"
      containerPath = "/scratch"
      readOnly      = false
    }]

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this[each.key].name
        awslogs-region        = local.region
        awslogs-stream-prefix = each.value.name
      }
    }
  }])

  tags = merge(var.tags, { Name = "${var.name_prefix}-${each.value.name}" })
}

resource "aws_ecs_service" "service" {
  for_each = local.services

  name                               = "${var.name_prefix}-${each.value.name}"
  cluster                            = aws_ecs_cluster.this.arn
  task_definition                    = aws_ecs_task_definition.service[each.key].arn
  desired_count                      = each.value.desired_count
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

  tags = merge(var.tags, { Name = "${var.name_prefix}-${each.value.name}" })

  depends_on = [aws_iam_role_policy.execution, aws_iam_role_policy.service]
}
