"""Checks on template.yaml that cfn-lint cannot make: what a first deploy
and a later one would meet. Run by ./tests/run with the project's venv
(cfn-lint's own YAML reader, which keeps the intrinsics as Ref/Fn:: keys).

- The secret parameters refuse what would break the JSON they are pasted
  into (Secrets Manager, read at every function's start), and accept the
  secrets senders really issue; an accepted one round-trips exactly.
- The WebSocket stage auto-deploys: a route changed in a later deploy
  reaches it (a Deployment resource of our own never changes).
- The subscribe secret reaches exactly the functions whose role checks
  subscribe tokens (the Lambda mains say which role they start as).
- Every alarm watches a metric under a dimension set AWS publishes it with,
  and Lambda throttles are watched for every function.
"""
import json
import pathlib
import re
import sys

from cfnlint.decode import decode_str

ROOT = pathlib.Path(__file__).resolve().parents[2]
template, problems = decode_str((ROOT / "template.yaml").read_text())
assert template is not None and not problems, problems
params, resources = template["Parameters"], template["Resources"]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


# ---- secrets pasted into JSON ----------------------------------------------------
GOOD = ["netlify-jws-secret-0123", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "p@ss w0rd;with{braces}&more", "ünïcödé-secret-0123456"]
BAD = ['a"quoted"secret-0123456', "back\\slash-secret-012345", "new\nline-secret-0123456", "tab\tsecret-0123456789", "short"]


def pasted(resource, values):
    """The SecretString as CloudFormation's Fn::Sub builds it from parameter values."""
    sub = resources[resource]["Properties"]["SecretString"]["Fn::Sub"]
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], sub)


for name, resource in [("NetlifySecret", "Secrets"), ("ZapierToken", "Secrets"), ("SubscribeSecret", "SubscribeSecrets")]:
    pattern = params[name].get("AllowedPattern")
    check(pattern is not None, f"{name} has no AllowedPattern")
    if pattern is None:
        continue
    # CloudFormation matches the whole value (Java regex; the same here).
    allowed = lambda v: re.fullmatch(pattern, v) is not None  # noqa: E731
    for v in GOOD:
        check(allowed(v), f"{name} refuses a good secret {v!r}")
        others = {p: "other-secret-0123456789" for p in ("NetlifySecret", "ZapierToken", "SubscribeSecret")}
        others[name] = v
        try:
            got = json.loads(pasted(resource, others))
            check(v in got.values(), f"{name}: {v!r} does not round-trip through {resource}: {got}")
        except ValueError as e:
            failures.append(f"{name}: {v!r} breaks {resource}'s JSON: {e}")
    for v in BAD:
        check(not allowed(v), f"{name} accepts {v!r}, which breaks {resource}'s JSON or is too short")
    if name == "SubscribeSecret":
        check(allowed(""), "SubscribeSecret must stay optional (empty)")

# ---- the WebSocket stage follows route changes -----------------------------------
stages = [r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
ws_api = [k for k, r in resources.items() if r["Type"] == "AWS::ApiGatewayV2::Api" and r["Properties"]["ProtocolType"] == "WEBSOCKET"]
for stage in stages:
    if stage["Properties"]["ApiId"] == {"Ref": ws_api[0]}:
        check(stage["Properties"].get("AutoDeploy") is True, "the WebSocket stage does not auto-deploy: later route changes never reach it")
        check("DeploymentId" not in stage["Properties"], "the WebSocket stage is pinned to one deployment")

# ---- the subscribe secret reaches exactly the token-checking roles ---------------
TOKEN_ROLES = {"Message", "Webhook"}
env_globals = template["Globals"]["Function"]["Environment"]["Variables"]
check("HOOKCAST_PRIVATE_CHANNELS" in env_globals, "PrivateChannels does not reach the functions")
for key, r in resources.items():
    if r["Type"] != "AWS::Serverless::Function":
        continue
    binary = r["Metadata"]["BuildProperties"]["Binary"]
    main = (ROOT / "functions" / binary / "src" / "main.rs").read_text()
    roles = set(re.findall(r"Role::(\w+)", main)) or {"Dispatch" if "dispatch" in main else "Fanout"}
    env = r["Properties"].get("Environment", {}).get("Variables", {})
    gets_secret = "SubscribeSecrets" in json.dumps(env.get("HOOKCAST_SECRETS_ARN", ""))
    check(gets_secret == bool(roles & TOKEN_ROLES), f"{key} ({binary}, role {sorted(roles)}): subscribe secret given: {gets_secret}")

# ---- alarms watch metrics that exist ---------------------------------------------
# AWS's metrics are published under these dimension sets only; an alarm on any
# other set watches a metric that never has data, and never fires.
# (AWS/DynamoDB ThrottledRequests is per TableName *and* Operation.)
PUBLISHED = {
    ("AWS/Lambda", "Errors"): [{"FunctionName"}],
    ("AWS/Lambda", "Throttles"): [{"FunctionName"}],
    ("AWS/DynamoDB", "ReadThrottleEvents"): [{"TableName"}],
    ("AWS/DynamoDB", "WriteThrottleEvents"): [{"TableName"}],
    ("AWS/DynamoDB", "ThrottledRequests"): [{"TableName", "Operation"}],
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): [{"QueueName"}],
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"): [{"QueueName"}],
    # hookcast's own EMF metrics (functions/aws/src/emf.rs).
    ("hookcast", "Failed"): [set()],
    ("hookcast", "Webhooks"): [{"Source", "Outcome"}],
}
watched_throttles = set()
for key, r in resources.items():
    if r["Type"] != "AWS::CloudWatch::Alarm":
        continue
    p = r["Properties"]
    metrics = [(p["Namespace"], p["MetricName"], p.get("Dimensions", []))] if "MetricName" in p else [
        (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"], m["MetricStat"]["Metric"].get("Dimensions", []))
        for m in p["Metrics"] if "MetricStat" in m
    ]
    for ns, name, dims in metrics:
        names = {d["Name"] for d in dims}
        known = PUBLISHED.get((ns, name))
        check(known is not None, f"{key}: {ns} {name} is not a metric this check knows")
        check(known is None or names in known, f"{key}: {ns} {name} is never published with dimensions {sorted(names)}")
        if (ns, name) == ("AWS/Lambda", "Throttles"):
            watched_throttles |= {d["Value"]["Ref"] for d in dims}
functions = {k for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
check(watched_throttles == functions, f"Lambda throttles are watched for {sorted(watched_throttles)}, not every function")

if failures:
    print("template.yaml:\n  - " + "\n  - ".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"template.yaml: secret parameters ({len(GOOD)} good and {len(BAD)} bad secrets each), WebSocket stage, secret wiring and alarm metrics checked")
