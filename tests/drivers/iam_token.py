"""Prints an RDS IAM auth token made as an application makes one, with boto3's
generate_db_auth_token.

    python iam_token.py HOST PORT USER ACCESS_KEY_ID SECRET_KEY REGION
"""

import sys

import boto3

host, port, user, key_id, secret, region = sys.argv[1:7]
rds = boto3.client(
    "rds", region_name=region, aws_access_key_id=key_id, aws_secret_access_key=secret
)
print(rds.generate_db_auth_token(DBHostname=host, Port=int(port), DBUsername=user))
