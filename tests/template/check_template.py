#!/usr/bin/env python3
"""Renders template.yaml with SAM's own translator (aws-sam-translator, what `sam deploy`
runs in CloudFormation) and asserts the IAM the stack gets, exactly: one role, the
function's, with no managed policies and these statements — so a later change cannot widen
the function's rights unnoticed. Also checks that every alarm notifies the alarm topic and
that the runbook (docs/operating.md) has a section for each alarm.

Usage: check_template.py [template.yaml] [docs/operating.md]   (exits 1 listing what differs)
"""
import json
import os
import re
import sys

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the translator wants a region
from samcli.yamlhelper import yaml_parse  # noqa: E402
from samtranslator.translator.transform import transform  # noqa: E402

EXPECTED_STATEMENTS = [
    {"Sid": "WriteItsLogs", "Effect": "Allow",
     "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
     "Resource": {"Fn::GetAtt": ["FunctionLogGroup", "Arn"]}},
    {"Sid": "ReadTheStream", "Effect": "Allow",
     "Action": ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords",
                "kinesis:GetShardIterator", "kinesis:ListShards"],
     "Resource": {"Ref": "StreamArn"}},
    {"Sid": "HeartbeatIntoQuietShards", "Effect": "Allow", "Action": "kinesis:PutRecord",
     "Resource": {"Ref": "StreamArn"}},
    # Only with StreamKmsKeyArn set: the stream's own key.
    {"Fn::If": ["StreamHasCustomerKey", {
        "Sid": "UseTheStreamKey", "Effect": "Allow",
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Resource": {"Ref": "StreamKmsKeyArn"}},
        {"Ref": "AWS::NoValue"}]},
    {"Sid": "WriteParquetQuarantineAndSchemas", "Effect": "Allow", "Action": "s3:PutObject",
     "Resource": {"Fn::Sub": "${LakeBucket.Arn}/${S3Prefix}*"}},
    {"Sid": "ReadSchemaRegistryAndSpool", "Effect": "Allow", "Action": "s3:GetObject",
     "Resource": [{"Fn::Sub": "${LakeBucket.Arn}/${S3Prefix}_schemas/*"},
                  {"Fn::Sub": "${LakeBucket.Arn}/${S3Prefix}_spool/*"}]},
    {"Sid": "ListTheLake", "Effect": "Allow", "Action": "s3:ListBucket",
     "Resource": {"Fn::GetAtt": ["LakeBucket", "Arn"]},
     "Condition": {"StringLike": {"s3:prefix": {"Fn::Sub": "${S3Prefix}*"}}}},
    {"Sid": "ReportAndRedriveFailedBatches", "Effect": "Allow",
     "Action": ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage"],
     "Resource": {"Fn::GetAtt": ["FailureQueue", "Arn"]}},
    # Catalog upkeep (CatalogUpkeep=true): the one database, the one workgroup.
    {"Fn::If": ["KeepCatalog", {
        "Sid": "KeepTheCatalogDatabase", "Effect": "Allow",
        "Action": ["glue:GetDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable"],
        "Resource": [
            {"Fn::Sub": "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:catalog"},
            {"Fn::Sub": "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:database/${GlueDatabaseName}"},
            {"Fn::Sub": "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:table/${GlueDatabaseName}/*"}]},
        {"Ref": "AWS::NoValue"}]},
    {"Fn::If": ["KeepCatalog", {
        "Sid": "CreateViewsInItsWorkGroup", "Effect": "Allow",
        "Action": ["athena:StartQueryExecution", "athena:GetQueryExecution"],
        "Resource": {"Fn::Sub": "arn:${AWS::Partition}:athena:${AWS::Region}:${AWS::AccountId}:workgroup/${AthenaWorkGroup}"}},
        {"Ref": "AWS::NoValue"}]},
    {"Fn::If": ["KeepCatalog", {
        "Sid": "AthenaResultsLocation", "Effect": "Allow",
        "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucketMultipartUploads",
                   "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"],
        "Resource": [{"Fn::GetAtt": ["LakeBucket", "Arn"]},
                     {"Fn::Sub": "${LakeBucket.Arn}/${S3Prefix}_athena/*"}]},
        {"Ref": "AWS::NoValue"}]},
]


class NoManagedPolicies:
    """The translator asks IAM for managed policy ARNs only when a template names one."""
    def load(self):
        return {}


def main():
    template_path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    readme_path = sys.argv[2] if len(sys.argv) > 2 else "docs/operating.md"
    template = yaml_parse(open(template_path, encoding="utf-8").read())
    # `sam deploy` uploads the code first; the translator only accepts an S3 URI.
    template["Resources"]["CdcBatcherFunction"]["Properties"]["CodeUri"] = "s3://bucket/code.zip"
    out = transform(template, {}, NoManagedPolicies())
    resources = out["Resources"]
    problems = []

    roles = {k: v for k, v in resources.items() if v["Type"] == "AWS::IAM::Role"}
    if list(roles) != ["CdcBatcherRole"]:
        problems.append(f"IAM roles: {sorted(roles)}, expected only CdcBatcherRole")
    others = sorted(k for k, v in resources.items()
                    if v["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User"))
    if others:
        problems.append(f"other IAM resources: {others}")
    role = roles.get("CdcBatcherRole", {}).get("Properties", {})
    if role.get("ManagedPolicyArns"):
        problems.append(f"managed policies attached: {role['ManagedPolicyArns']}")
    trust = role.get("AssumeRolePolicyDocument", {}).get("Statement", [])
    if trust != [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                  "Action": "sts:AssumeRole"}]:
        problems.append(f"trust policy: {json.dumps(trust)}")
    policies = role.get("Policies", [])
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    if statements != EXPECTED_STATEMENTS:
        problems.append("role statements differ:\n  got      "
                        + json.dumps(statements, sort_keys=True)
                        + "\n  expected " + json.dumps(EXPECTED_STATEMENTS, sort_keys=True))
    fn = resources["CdcBatcherFunction"]["Properties"]
    env = fn.get("Environment", {}).get("Variables", {})
    for var, ref in (("GLUE_DATABASE", "CatalogDatabase"), ("ATHENA_WORKGROUP", "AthenaWorkGroup")):
        if env.get(var) != {"Fn::If": ["KeepCatalog", {"Ref": ref}, ""]}:
            problems.append(f"{var} is {env.get(var)}: catalog upkeep must follow CatalogUpkeep")
    for name in ("CatalogDatabase", "AthenaWorkGroup"):
        if resources.get(name, {}).get("Condition") != "KeepCatalog":
            problems.append(f"{name} is not conditional on KeepCatalog")
    if fn.get("Role") != {"Fn::GetAtt": ["CdcBatcherRole", "Arn"]}:
        problems.append(f"the function's role is {fn.get('Role')}")

    alarms = sorted(k for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm")
    for name in alarms:
        props = resources[name]["Properties"]
        if props.get("AlarmActions") != [{"Ref": "AlarmTopic"}]:
            problems.append(f"{name} does not notify AlarmTopic")
    readme = open(readme_path, encoding="utf-8").read()
    runbook = readme.split("## Runbook", 1)[1].split("\n## ", 1)[0] if "## Runbook" in readme else ""
    documented = set(re.findall(r"^#### `(\w+)`", runbook, re.M))
    if documented != set(alarms):
        problems.append(f"runbook sections {sorted(documented)} != alarms {alarms}")

    print(json.dumps({"roles": sorted(roles), "statements": len(statements), "alarms": len(alarms),
                      "problems": problems}, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
