"""Prefect blocks describing the AWS resources the flows use.

Flows load blocks by the names below; ``interlinked up`` (or a deploy to AWS) saves them.
"""

from blocks.sns import SnsTopic
from blocks.sqs import SqsQueue

# Block document names, shared by whoever saves the blocks and every flow that loads them.
AWS_CREDENTIALS = "interlinked-aws"
DATA_BUCKET = "interlinked-data"
ANALYSIS_BUCKET = "interlinked-analysis"
RESULT_STORAGE = "interlinked-results"
WORK_QUEUE = "interlinked-work"
EVENTS_QUEUE = "interlinked-events"
WORK_RESULTS_TOPIC = "interlinked-work-results"
JOB_EVENTS_TOPIC = "interlinked-job-events"

__all__ = [
    "ANALYSIS_BUCKET",
    "AWS_CREDENTIALS",
    "DATA_BUCKET",
    "EVENTS_QUEUE",
    "JOB_EVENTS_TOPIC",
    "RESULT_STORAGE",
    "WORK_QUEUE",
    "WORK_RESULTS_TOPIC",
    "SnsTopic",
    "SqsQueue",
]
