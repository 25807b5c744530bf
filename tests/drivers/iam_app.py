"""An application written for RDS Proxy with IAM database authentication, unchanged: it makes a
token for the proxy endpoint's name with boto3 and connects with psycopg over verify-full TLS,
no client certificate. Only the address it dials is pgvalet's.

    python iam_app.py PORT CA ENDPOINT_HOST ENDPOINT_PORT USER DATABASE
"""

import sys

import boto3
import psycopg

port, ca, endpoint_host, endpoint_port, user, db = sys.argv[1:7]
# The local test keys moto and LocalStack use; a real app gets its keys from its role.
rds = boto3.client(
    "rds", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
)
token = rds.generate_db_auth_token(DBHostname=endpoint_host, Port=int(endpoint_port), DBUsername=user)
with psycopg.connect(
    host="127.0.0.1", port=port, dbname=db, user=user, password=token,
    sslmode="verify-full", sslrootcert=ca,
) as conn:
    who = conn.execute("select current_user").fetchone()[0]
print(f"psycopg logged in with an IAM token; the backend user is {who}")
