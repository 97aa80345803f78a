"""The event bridge: S3 notifications, SNS envelopes, EventBridge events and job messages →
Prefect flow runs, exactly once in effect.

One routing core (:mod:`.core`, routes declared in :mod:`.routes` / ``routes.json``) and two front
ends: the events-queue consumer (``python -m interlinked.bridge``, :mod:`.consumer`) and the AWS
Lambda handler (:mod:`.lambda_handler`). Everything the Lambda imports is stdlib + boto3 (and
``blocks.queues``, botocore only); keep this file free of imports.
"""
