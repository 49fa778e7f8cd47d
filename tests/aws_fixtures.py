"""AWS resources for moto-backed tests, shaped as the CDK stack shapes them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3

from docflow.adapters.dynamodb import STATUS_INDEX

BUCKET = "docflow-documents-test"
TABLE = "docflow-records-test"


def create_resources() -> dict[str, Any]:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    # Versioned, as the stack's documents bucket is: each put is a new version and its event names it.
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "gsi1pk", "gsi1sk")
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": STATUS_INDEX,
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    return {"s3": s3, "dynamodb": ddb}


EVENT = json.loads((Path(__file__).parent / "events" / "s3_object_created.json").read_text())


def object_created(key: str, bucket: str = BUCKET, s3: Any = None) -> dict[str, Any]:
    """The EventBridge "Object Created" event S3 sends for the object now under `key`: its own version id,
    ETag and size, the key URL-encoded as S3 encodes it."""
    s3 = s3 or boto3.client("s3", region_name="us-east-1")
    head = s3.head_object(Bucket=bucket, Key=key)
    event: dict[str, Any] = copy.deepcopy(EVENT)
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"] = {
        **event["detail"]["object"],
        "key": quote_plus(key, safe="/"),
        "size": head["ContentLength"],
        "etag": head["ETag"].strip('"'),
        "version-id": head["VersionId"],
    }
    return event
