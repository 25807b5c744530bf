"""Runs an ECS task definition's containers on a docker host the way ECS runs them, to try the
sidecar shape without AWS: every container in one network namespace (the first container's,
as `awsvpc` gives a task one ENI and one loopback), `environment` as given, `secrets` read from a
Secrets Manager (`--sm-endpoint`, e.g. a local moto server) by secret name and JSON key as ECS
injects them, `user`, `readonlyRootFilesystem`, `stopTimeout` and the `healthCheck` timings as
docker flags, and `dependsOn: HEALTHY` honoured before a container starts.

    python scripts/ecs-task-run.py deploy/ecs/task-definition.json \\
        --prefix demo --network NET --sm-endpoint http://127.0.0.1:4566 \\
        --image pgvalet=pgvalet:latest --image orders=postgres:15 \\
        --env pgvalet:PGVALET_BACKENDS__MAIN__HOST=postgres \\
        --command 'orders=sleep infinity'

Containers are named PREFIX-NAME and labelled pgvalet.ecs-task=PREFIX; `docker rm -fv` them to
stop the task. The first container in `dependsOn` order owns the network namespace and joins
NETWORK; `--image` replaces a container's image (an ECR name a docker host cannot pull),
`--env NAME:KEY=VALUE` adds a variable (what a local run must point elsewhere than AWS),
`--command NAME=SH` runs SH with `sh -c` instead of the image's command.
"""

import argparse
import json
import subprocess
import sys
import time

import boto3


def secret_value(sm_cache, endpoint, value_from):
    # arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX[:JSON_KEY:VERSION_STAGE:VERSION_ID]
    parts = value_from.split(":")
    region, name = parts[3], parts[6].rsplit("-", 1)[0]
    key = parts[7] if len(parts) > 7 else ""
    stage = parts[8] if len(parts) > 8 and parts[8] else "AWSCURRENT"
    if (region, name, stage) not in sm_cache:
        sm = boto3.client("secretsmanager", endpoint_url=endpoint, region_name=region,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        sm_cache[(region, name, stage)] = sm.get_secret_value(SecretId=name, VersionStage=stage)["SecretString"]
    text = sm_cache[(region, name, stage)]
    return json.loads(text)[key] if key else text


def start_order(containers):
    """Containers sorted so that each comes after those it depends on."""
    done, order = set(), []
    while len(order) < len(containers):
        progressed = False
        for c in containers:
            deps = {d["containerName"] for d in c.get("dependsOn", [])}
            if c["name"] not in done and deps <= done:
                order.append(c)
                done.add(c["name"])
                progressed = True
        if not progressed:
            sys.exit("dependsOn has a cycle")
    return order


def wait_for(name, condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(subprocess.run(["docker", "inspect", "-f", "{{json .State}}", name],
                                          check=True, capture_output=True, text=True).stdout)
        if condition == "HEALTHY" and state.get("Health", {}).get("Status") == "healthy":
            return
        if condition == "START" and state["Running"]:
            return
        if condition in ("COMPLETE", "SUCCESS") and not state["Running"] and state["FinishedAt"][0] != "0":
            if condition == "COMPLETE" or state["ExitCode"] == 0:
                return
            sys.exit(f"{name} exited {state['ExitCode']}")
        if not state["Running"] and condition in ("HEALTHY", "START"):
            sys.exit(f"{name} exited {state['ExitCode']} before it was {condition}")
        time.sleep(1)
    sys.exit(f"{name} was not {condition} within {timeout} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task")
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--network", required=True)
    ap.add_argument("--sm-endpoint", required=True)
    ap.add_argument("--image", action="append", default=[])
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--command", action="append", default=[])
    args = ap.parse_args()

    task = json.load(open(args.task))
    images = dict(i.split("=", 1) for i in args.image)
    commands = dict(c.split("=", 1) for c in args.command)
    extra = {}
    for e in args.env:
        name, kv = e.split(":", 1)
        extra.setdefault(name, []).append(kv)
    sm_cache = {}
    owner = None
    for c in start_order(task["containerDefinitions"]):
        for dep in c.get("dependsOn", []):
            hc = next(d for d in task["containerDefinitions"] if d["name"] == dep["containerName"])
            h = hc.get("healthCheck", {})
            timeout = h.get("startPeriod", 0) + (h.get("interval", 30) + h.get("timeout", 5)) * h.get("retries", 3) + 30
            wait_for(f"{args.prefix}-{dep['containerName']}", dep["condition"], timeout)
        name = f"{args.prefix}-{c['name']}"
        cmd = ["docker", "run", "-d", "--name", name, "--label", f"pgvalet.ecs-task={args.prefix}"]
        # awsvpc: one network namespace for the task, owned by the first container.
        if owner is None:
            cmd += ["--network", args.network, "--network-alias", c["name"]]
            owner = name
        else:
            cmd += ["--network", f"container:{owner}"]
        if "user" in c:
            cmd += ["--user", c["user"]]
        if c.get("readonlyRootFilesystem"):
            cmd += ["--read-only"]
        if "stopTimeout" in c:
            cmd += ["--stop-timeout", str(c["stopTimeout"])]
        h = c.get("healthCheck")
        if h:
            # The command is the image's HEALTHCHECK (docker's flag takes only the shell form,
            # and the image has no shell); tests/packaging.rs checks that the two agree.
            for key, flag in (("interval", "--health-interval"), ("timeout", "--health-timeout"),
                              ("startPeriod", "--health-start-period")):
                if key in h:
                    cmd += [flag, f"{h[key]}s"]
            if "retries" in h:
                cmd += ["--health-retries", str(h["retries"])]
        for e in c.get("environment", []):
            cmd += ["-e", f"{e['name']}={e['value']}"]
        for s in c.get("secrets", []):
            cmd += ["-e", f"{s['name']}={secret_value(sm_cache, args.sm_endpoint, s['valueFrom'])}"]
        for kv in extra.get(c["name"], []):
            cmd += ["-e", kv]
        if c["name"] in commands:
            cmd += ["--entrypoint", "sh", images.get(c["name"], c["image"]), "-c", commands[c["name"]]]
        else:
            cmd += [images.get(c["name"], c["image"])]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"started {name}")


if __name__ == "__main__":
    main()
