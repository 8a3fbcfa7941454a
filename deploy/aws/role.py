"""``--create-role``: a least-privilege execution role for the deployment, ``ENDPOINT-sagemaker``:
SageMaker may assume it, pull the image from its ECR repository, read the model artifact and
the inputs, write results and failures, its logs and metrics; nothing else.
(sagemaker-roles.html lists what each SageMaker operation needs of the role.)

IAM changes take a few seconds to reach SageMaker: the deploy's first CreateModel after a new
role may be refused once; re-run the command.
"""

from __future__ import annotations

import json
from typing import Any

from deploy.plan import Call, Plan
from deploy.release import APP, APP_TAG, DEPLOYMENT_TAG
from deploy.aws.s3 import error_of

TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def _s3_arn(uri: str, suffix: str = "") -> str:
    return "arn:aws:s3:::" + uri.removeprefix("s3://").rstrip("/") + suffix


def policy_document(r: Any, account: str) -> dict[str, Any]:
    s = r.settings
    region = r.image_uri.split(".")[3] if ".dkr.ecr." in r.image_uri else "*"
    repository = r.image_uri.split("/", 1)[1].split("@")[0].split(":")[0] if "/" in r.image_uri else s.repository
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Effect": "Allow", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
         "Resource": f"arn:aws:ecr:{region}:{account}:repository/{repository}"},
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": f"arn:aws:logs:*:{account}:log-group:/aws/sagemaker/*"},
        {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringLike": {"cloudwatch:namespace": ["AWS/SageMaker", "/aws/sagemaker/*"]}}},
    ]
    readable = [u for u in (r.model_data_url, r.checkpoint_env if (r.checkpoint_env or "").startswith("s3://") else None) if u]
    if s.mode == "batch" and s.input:
        readable.append(s.input + "/*")
        bucket = s.input.removeprefix("s3://").split("/")[0]
        statements.append({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"})
    if readable:
        statements.append({"Effect": "Allow", "Action": "s3:GetObject", "Resource": [_s3_arn(u) for u in readable]})
    if s.mode in ("async", "batch") and s.output:
        statements.append({"Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"], "Resource": _s3_arn(s.output, "/*")})
        if s.mode == "async":  # async requests name their input in S3: the invoke uploads under OUTPUT/inputs/
            statements.append({"Effect": "Allow", "Action": "s3:GetObject", "Resource": _s3_arn(s.output, "/inputs/*")})
    topics = [t for t in (s.sns_success_topic, s.sns_error_topic) if t]
    if topics:
        statements.append({"Effect": "Allow", "Action": "sns:Publish", "Resource": topics})
    return {"Version": "2012-10-17", "Statement": statements}


def role_plan(r: Any, account: str, clients: Any | None) -> Plan:
    """Create the role if missing and (re)write its policy when it differs."""
    name = r.role_arn.rsplit("/", 1)[1]
    policy = policy_document(r, account)
    calls = []
    iam = clients("iam") if clients is not None else None
    exists = False
    if iam is not None:
        try:
            iam.get_role(RoleName=name)
            exists = True
        except Exception as exc:
            if error_of(exc).get("Code") != "NoSuchEntity":
                raise
    if not exists:
        calls.append(Call("iam", "create_role", {
            "RoleName": name, "AssumeRolePolicyDocument": json.dumps(TRUST),
            "Description": f"segment-anywhere execution role of {r.settings.endpoint}",
            "Tags": [{"Key": APP_TAG, "Value": APP}, {"Key": DEPLOYMENT_TAG, "Value": r.settings.endpoint}],
        }, f"execution role {name}"))
    current = None
    if exists:
        try:
            current = iam.get_role_policy(RoleName=name, PolicyName="segment-anywhere")["PolicyDocument"]
        except Exception:
            current = None
    if isinstance(current, str):
        current = json.loads(current)
    if current != policy:
        calls.append(Call("iam", "put_role_policy", {
            "RoleName": name, "PolicyName": "segment-anywhere", "PolicyDocument": json.dumps(policy)},
            f"least-privilege policy of {name}"))
    return Plan(tuple(calls))
