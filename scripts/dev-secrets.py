"""Stores the development credentials in the local Secrets Manager (moto) for `make run-aws`,
and rotates them by hand: the same steps the AWS rotation Lambda takes.

    .venv/bin/python scripts/dev-secrets.py store            # target/dev/secrets/*.json -> pgvalet/dev/*
    .venv/bin/python scripts/dev-secrets.py rotate orders    # single-user rotation of pgvalet/dev/orders

Against the compose stack (docker-compose.yml) instead of make run-aws:

    PGVALET_DEV_SM=http://127.0.0.1:4566 PGVALET_DEV_PG_HOST=127.0.0.1 PGPASSWORD=superuser-dev-only \
        .venv/bin/python scripts/dev-secrets.py rotate orders
"""

import json
import os
import secrets
import subprocess
import sys
import time

import boto3

ENDPOINT = os.environ.get("PGVALET_DEV_SM", "http://127.0.0.1:4566")
DEV = os.path.realpath("target/dev")


def client():
    return boto3.client(
        "secretsmanager",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def store():
    sm = client()
    for svc in ("orders", "billing"):
        with open(os.path.join(DEV, "secrets", f"{svc}.json")) as f:
            value = f.read()
        name = f"pgvalet/dev/{svc}"
        try:
            sm.create_secret(Name=name, SecretString=value)
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=name, SecretString=value)
        print(f"stored {name}")


def psql(sql):
    # The superuser: through make run's socket by default; with PGVALET_DEV_PG_HOST (for the
    # compose stack: 127.0.0.1, and PGPASSWORD) over TCP.
    host = os.environ.get("PGVALET_DEV_PG_HOST", os.path.join(DEV, "run"))
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host,
           "-p", os.environ.get("PGVALET_DEV_PG_PORT", "55432"), "-U", "postgres", "-d", "postgres", "-c", sql]
    if os.geteuid() == 0 and host.startswith("/"):
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, cwd="/")


def rotate(svc):
    sm = client()
    name = f"pgvalet/dev/{svc}"
    current = sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
    value = json.loads(current["SecretString"])
    value["password"] = secrets.token_hex(16)
    # 1. createSecret: the new password as AWSPENDING.
    pending = sm.put_secret_value(SecretId=name, SecretString=json.dumps(value), VersionStages=["AWSPENDING"])
    print(f"1/3 put AWSPENDING {pending['VersionId']}")
    # 2. setSecret: the database takes the new password. New logins with AWSCURRENT now fail;
    #    pgvalet falls back to AWSPENDING.
    psql(f"ALTER ROLE {value['username']} PASSWORD '{value['password']}'")
    print(f"2/3 ALTER ROLE {value['username']} (the window is open)")
    time.sleep(3)
    # 3. finishSecret: AWSCURRENT moves; the old version becomes AWSPREVIOUS.
    sm.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT",
                                   MoveToVersionId=pending["VersionId"], RemoveFromVersionId=current["VersionId"])
    sm.update_secret_version_stage(SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=pending["VersionId"])
    print("3/3 moved AWSCURRENT")


if __name__ == "__main__":
    if sys.argv[1:2] == ["store"]:
        store()
    elif sys.argv[1:2] == ["rotate"] and len(sys.argv) == 3:
        rotate(sys.argv[2])
    else:
        sys.exit(__doc__)
