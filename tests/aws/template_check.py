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
- The fan-out's default posting rate (workers x posts/s) fits the account's
  API Gateway quota where it is smallest (2,500/s), with room to spare.
- For every value of every parameter the Conditions read, what would be
  created refers to and depends on nothing that is not; the account-wide
  API Gateway CloudWatch role is set only when asked for, and the WebSocket
  stage logs exactly when that role is there (and waits for it).
- Each function's environment fits Lambda's 4 KB in the worst case the
  parameters' limits allow.
- Every alarm watches a metric under a dimension set AWS publishes it with
  (hookcast's own: as functions/aws/src/emf.rs declares them), Lambda
  throttles are watched for every function, and store outages (answered 503,
  invisible to Lambda Errors) are alarmed on once emf.rs publishes webhooks
  by outcome alone.

Usage: template_check.py [TEMPLATE] (default: the project's template.yaml).
"""
import ast
import itertools
import json
import pathlib
import re
import sys

from cfnlint.decode import decode_str

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Another template (a deliberately broken copy) can be checked instead: argv[1].
TEMPLATE = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "template.yaml"
template, problems = decode_str(TEMPLATE.read_text())
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
    # The [text, {name: value}] form: a name there stands for a parameter
    # (here only through Fn::If of a parameter and "", so the parameter's
    # value is the worst case).
    local = {}
    if isinstance(sub, list):
        sub, mapping = sub
        for k, v in mapping.items():
            refs = re.findall(r"'Ref': '(\w+)'", str(v))
            check(len(refs) == 1 and refs[0] in params, f"{resource}: ${{{k}}} is not one parameter's value")
            local[k] = refs[0] if refs else k

    def value(m):
        name = local.get(m.group(1), m.group(1))
        if name in values:
            return values[name]
        # A resource's Ref: the queue's URL is the only one pasted, and it is JSON-safe.
        check(resources.get(name, {}).get("Type") == "AWS::SQS::Queue", f"{resource} pastes ${{{name}}}, neither a secret parameter nor a queue")
        return f"https://sqs.us-east-1.amazonaws.com/123456789012/{name}.fifo"

    return re.sub(r"\$\{(\w+)\}", value, sub)


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
        others["EdgeOriginSecret"] = "edge-origin-secret-0123456789abcdef"
        others[name] = v
        try:
            got = json.loads(pasted(resource, others))
            check(v in got.values(), f"{name}: {v!r} does not round-trip through {resource}: {got}")
        except ValueError as e:
            failures.append(f"{name}: {v!r} breaks {resource}'s JSON: {e}")
    for v in BAD:
        check(not allowed(v), f"{name} accepts {v!r}, which breaks {resource}'s JSON or is too short")
    # Every secret parameter is optional: secrets live in SenderSecrets (filled with `hookcast secrets`).
    check(allowed(""), f"{name} must stay optional (empty)")

# The edge option's origin secret is pasted too: only letters, digits, '-' and '_'.
edge = params["EdgeOriginSecret"].get("AllowedPattern", "")
check(re.fullmatch(edge, "") is not None, "EdgeOriginSecret must stay optional (empty)")
for v in BAD + ["x" * 31, 'edge"secret-0123456789abcdef012345']:
    check(re.fullmatch(edge, v) is None, f"EdgeOriginSecret accepts {v!r}, which breaks the Secrets JSON or is too short")
check(re.fullmatch(edge, "0123456789abcdef0123456789abcdef") is not None, "EdgeOriginSecret refuses a 32-character hex secret")

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
# ---- one hookcast.toml: the config layer reaches every function ------------------
layer = resources.get("ConfigLayer", {})
check(layer.get("Type") == "AWS::Serverless::LayerVersion", "no ConfigLayer: config/hookcast.toml does not reach the functions")
content = ROOT / str(layer.get("Properties", {}).get("ContentUri", "")).rstrip("/")
check((content / "hookcast.toml").is_file(), f"the ConfigLayer's ContentUri {content} holds no hookcast.toml")
check(sorted(p.name for p in content.iterdir()) == ["hookcast.toml"] if content.is_dir() else False,
      "the ConfigLayer's folder holds more than hookcast.toml: all of it would be published in the layer")
check(template["Globals"]["Function"].get("Layers") == [{"Ref": "ConfigLayer"}], "the functions do not all have the ConfigLayer")
check(not any("HOOKCAST_CONFIG" == k or k in ("HOOKCAST_PRIVATE_CHANNELS", "HOOKCAST_STATE") for k in env_globals),
      "a retired parameter still reaches the functions' environment beside the config layer")
# A retired parameter set by an older samconfig.toml is refused, saying where it goes.
rules = template.get("Rules", {})
for retired in ("SourcesConfig", "PrivateChannels", "StateConfig"):
    asserted = [a for r in rules.values() for a in r.get("Assertions", []) if a.get("Assert") == {"Fn::Equals": [{"Ref": retired}, ""]}]
    check(len(asserted) == 1 and "config/hookcast.toml" in asserted[0].get("AssertDescription", ""),
          f"{retired} is not refused by a Rule naming config/hookcast.toml")
for key, r in resources.items():
    if r["Type"] != "AWS::Serverless::Function":
        continue
    binary = r["Metadata"]["BuildProperties"]["Binary"]
    main = (ROOT / "functions" / binary / "src" / "main.rs").read_text()
    roles = set(re.findall(r"Role::(\w+)", main)) or {"Dispatch" if "dispatch" in main else "Fanout"}
    env = r["Properties"].get("Environment", {}).get("Variables", {})
    gets_secret = "SubscribeSecrets" in json.dumps(env.get("HOOKCAST_SECRETS_ARN", ""))
    check(gets_secret == bool(roles & TOKEN_ROLES), f"{key} ({binary}, role {sorted(roles)}): subscribe secret given: {gets_secret}")

# ---- the fan-out's share of the account's API Gateway quota ---------------------
# PostToConnection calls count against the account's API Gateway quota per
# region, which every API of the account shares: 10,000 requests/s in most
# regions, 2,500/s in some (Cape Town, Milan, Jakarta, ...). The defaults must
# fit the smaller one with room left for the WebSocket routes and the HTTP API.
FANOUT_SHARE_MAX = 2_000
workers_p, rate_p = params["FanoutMaxWorkers"], params["PostsPerSecondPerWorker"]
share = int(workers_p["Default"]) * int(rate_p["Default"])
check(share <= FANOUT_SHARE_MAX, f"FanoutMaxWorkers x PostsPerSecondPerWorker defaults to {share:,}/s, more than {FANOUT_SHARE_MAX:,}/s "
      "(the account's whole API Gateway quota is 2,500/s in some regions)")
for name in ("FanoutMaxWorkers", "PostsPerSecondPerWorker"):
    d = params[name].get("Description", "")
    check("10,000" in d and "2,500" in d, f"{name}'s Description does not say the product is a share of the account's quota (10,000/s, 2,500/s in some regions)")
fanout_fn = resources["FanoutFunction"]["Properties"]
check(fanout_fn["Events"]["Jobs"]["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "FanoutMaxWorkers"},
      "the fan-out's event source is not capped by FanoutMaxWorkers")
check(fanout_fn["Environment"]["Variables"].get("HOOKCAST_POSTS_PER_SECOND") == {"Ref": "PostsPerSecondPerWorker"},
      "the fan-out worker is not paced by PostsPerSecondPerWorker")

# ---- every parameter value creates a consistent stack ----------------------------
# The Conditions are evaluated here for each value of each parameter they read;
# for each such set of values, what would be created must only depend on, or
# refer to, what is created too (a DependsOn or Ref to a resource whose
# Condition is false fails the deploy).
NO_VALUE = object()


def cond_value(expr, values):
    (k, a), = expr.items()
    if k == "Condition":
        return cond_value(template["Conditions"][a], values)
    if k == "Fn::Equals":
        x, y = (values[v["Ref"]] if isinstance(v, dict) else str(v) for v in a)
        return x == y
    if k == "Fn::Not":
        return not cond_value(a[0], values)
    if k in ("Fn::And", "Fn::Or"):
        return (all if k == "Fn::And" else any)(cond_value(c, values) for c in a)
    raise ValueError(f"condition function {k} is not modelled here")


def resolve(node, conds):
    """The node as CloudFormation would see it with these conditions: Fn::If
    takes its branch, AWS::NoValue removes the key or item."""
    if isinstance(node, dict):
        if list(node) == ["Fn::If"]:
            c, yes, no = node["Fn::If"]
            return resolve(yes if conds[c] else no, conds)
        if node == {"Ref": "AWS::NoValue"}:
            return NO_VALUE
        out = {k: resolve(v, conds) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}
    if isinstance(node, list):
        return [v for v in (resolve(x, conds) for x in node) if v is not NO_VALUE]
    return node


def refs(node):
    """Logical ids of resources a (resolved) node refers to."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref" and isinstance(v, str):
                if v not in params and not v.startswith("AWS::"):
                    yield v
            elif k == "Fn::GetAtt":
                yield (v.split(".")[0] if isinstance(v, str) else v[0])
            elif k == "Fn::Sub":
                text, local = (v, {}) if isinstance(v, str) else (v[0], v[1])
                for var in re.findall(r"\$\{([^!}][^}]*)\}", text):
                    name = var.split(".")[0]
                    if name not in local and name not in params and not name.startswith("AWS::"):
                        yield name
                yield from refs(local)
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for x in node:
            yield from refs(x)


def refs_any(node):
    """Every name a node Refs (parameters included)."""
    if isinstance(node, dict):
        if isinstance(node.get("Ref"), str):
            yield node["Ref"]
        for v in node.values():
            yield from refs_any(v)
    elif isinstance(node, list):
        for x in node:
            yield from refs_any(x)


def depends_on(r):
    d = r.get("DependsOn", [])
    return [d] if isinstance(d, str) else list(d)


conditions = template.get("Conditions", {})
read_by_conditions = sorted({n for n in refs_any(conditions) if n in params})


def choices(name):
    spec = params[name]
    if "AllowedValues" in spec:
        return [str(v) for v in spec["AllowedValues"]]
    default = str(spec.get("Default", ""))
    return [default, "x" if default != "x" else "y"]


ROLE_PARAM, CREATE, WITH_ROLE = "ApiGatewayLoggingRole", "create", {"create", "existing"}
role_spec = params.get(ROLE_PARAM, {})
check(ROLE_PARAM in params, f"no {ROLE_PARAM} parameter: the stack sets the account's API Gateway CloudWatch role unasked")
check(set(map(str, role_spec.get("AllowedValues", []))) >= WITH_ROLE, f"{ROLE_PARAM} must allow {sorted(WITH_ROLE)}")
check(str(role_spec.get("Default")) != CREATE, f"{ROLE_PARAM} defaults to {CREATE}: setting the account-wide role must be opt-in")
ws_stage = next((k for k, r in resources.items() if r["Type"] == "AWS::ApiGatewayV2::Stage" and r["Properties"]["ApiId"] == {"Ref": ws_api[0]}), None)
scenarios = 0
for combo in itertools.product(*(choices(n) for n in read_by_conditions)):
    values = {n: str(params[n].get("Default", "")) for n in params} | dict(zip(read_by_conditions, combo))
    conds = {c: cond_value(e, values) for c, e in conditions.items()}
    made = {k for k, r in resources.items() if "Condition" not in r or conds[r["Condition"]]}
    where = ", ".join(f"{n}={values[n]!r}" for n in read_by_conditions)
    scenarios += 1
    graph = {}
    for k in sorted(made):
        r = resolve({x: y for x, y in resources[k].items() if x != "Condition"}, conds)
        graph[k] = set(refs(r)) | set(depends_on(r))
        for dep in sorted(graph[k] - made):
            failures.append(f"with {where}: {k} depends on or refers to {dep}, which is not created")
    if any(r["Type"] == "AWS::Serverless::Function" for k, r in resources.items() if k in made):
        for dep in sorted(set(refs(resolve(template.get("Globals", {}), conds))) - made):
            failures.append(f"with {where}: Globals refer to {dep}, which is not created")
    for k, o in template.get("Outputs", {}).items():
        if "Condition" not in o or conds[o["Condition"]]:
            for dep in sorted(set(refs(resolve(o, conds))) - made):
                failures.append(f"with {where}: output {k} refers to {dep}, which is not created")
    if ROLE_PARAM not in values:
        continue
    mode = values[ROLE_PARAM]
    accounts = {k for k in made if resources[k]["Type"] == "AWS::ApiGateway::Account"}
    api_roles = {k for k in made if resources[k]["Type"] == "AWS::IAM::Role"
                 and "apigateway.amazonaws.com" in json.dumps(resources[k]["Properties"].get("AssumeRolePolicyDocument", {}))}
    check(bool(accounts) == (mode == CREATE), f"with {where}: AWS::ApiGateway::Account created: {sorted(accounts)}")
    check(bool(api_roles) == (mode == CREATE), f"with {where}: API Gateway's CloudWatch role created: {sorted(api_roles)}")
    if ws_stage in made:
        logs = "AccessLogSettings" in resolve(resources[ws_stage]["Properties"], conds)
        check(logs == (mode in WITH_ROLE), f"with {where}: WebSocket stage access logs {'on' if logs else 'off'} "
              "(they need the account's CloudWatch role, and are wanted whenever it is there)")
        # The stage's first deployment must wait for the account setting.
        seen, todo = set(), [ws_stage]
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo += graph.get(n, ())
        check(not accounts or accounts & seen, f"with {where}: the WebSocket stage does not wait for {sorted(accounts)}")
        if str(role_spec.get("Default")) == mode and values == {n: str(params[n].get("Default", "")) for n in params}:
            check(not logs, "the default WebSocket stage has access logs: a first deploy fails in an account whose CloudWatch role is unset")
check(scenarios > 1 or not conditions, "no parameter values to vary the Conditions with")

# ---- Lambda's 4 KB of environment per function ------------------------------------
# Lambda refuses a function whose variables, measured as the JSON it prints
# when it refuses ({"KEY":"value",...}, UTF-8), exceed 4 KB. The worst case
# is bounded here from the template: a parameter by its MaxLength times the
# most bytes one character its AllowedPattern admits costs in that JSON (6
# for \u00XX escapes if no pattern stops them), a resource's Ref or GetAtt
# (names, ARNs, URLs) by 256 characters, a number by 20. A String parameter
# without MaxLength is unbounded.
ENV_LIMIT = 4096
RESOURCE_LEN, NUMBER_LEN = 256, 20
PSEUDO_LEN = {"AWS::Region": 32, "AWS::AccountId": 12, "AWS::Partition": 16, "AWS::URLSuffix": 32, "AWS::StackName": 128}


def json_len(text):
    return len(json.dumps(text)) - 2


def char_cost(name):
    """The most JSON bytes one character of this parameter's value can cost."""
    pattern = params[name].get("AllowedPattern")
    probes = ["a", '"', "\\", "\n", "\t", "\x01", "é", "\U0001F600"]
    admitted = [c for c in probes if pattern is None or any(re.fullmatch(pattern, c * n) for n in (1, 16, 32))]
    return max(json_len(c) / len(c.encode("utf-16-le")) * 2 for c in admitted)


unbounded = set()


def param_len(name):
    spec = params[name]
    if "AllowedValues" in spec:
        return max(json_len(str(v)) for v in spec["AllowedValues"])
    if spec["Type"] == "Number":
        return NUMBER_LEN
    if "MaxLength" not in spec:
        unbounded.add(name)
        return 0
    return int(int(spec["MaxLength"]) * char_cost(name))


def value_len(v):
    if isinstance(v, str):
        return json_len(v)
    if isinstance(v, (int, float, bool)):
        return len(str(v))
    (k, a), = v.items()
    if k == "Ref":
        return param_len(a) if a in params else PSEUDO_LEN[a] if a.startswith("AWS::") else RESOURCE_LEN
    if k == "Fn::GetAtt":
        return RESOURCE_LEN
    if k == "Fn::If":
        return max(value_len(a[1]), value_len(a[2]))
    if k == "Fn::Join":
        return json_len(a[0]) * (len(a[1]) - 1) + sum(value_len(x) for x in a[1])
    if k == "Fn::Sub":
        text, local = (a, {}) if isinstance(a, str) else (a[0], a[1])
        total = json_len(re.sub(r"\$\{[^!}][^}]*\}", "", text))
        for var in re.findall(r"\$\{([^!}][^}]*)\}", text):
            total += value_len(local[var]) if var in local else value_len({"Ref": var} if "." not in var else {"Fn::GetAtt": var})
        return total
    raise ValueError(f"cannot bound {k}")


env_report = []
env_params = set()
for key, r in resources.items():
    if r["Type"] != "AWS::Serverless::Function":
        continue
    env = dict(env_globals)
    env.update(r["Properties"].get("Environment", {}).get("Variables", {}))
    env_params |= {p for v in env.values() for p in re.findall(r"\b(\w+)\b", json.dumps(v)) if p in params}
    size = 2 + sum(json_len(k) + 2 + 1 + value_len(v) + 2 for k, v in env.items()) + len(env) - 1
    env_report.append((size, key))
    check(size <= ENV_LIMIT, f"{key}: its environment can reach {size:,} bytes, over Lambda's {ENV_LIMIT:,}")
for name in sorted(unbounded):
    failures.append(f"{name} reaches the functions' environment without a MaxLength (unbounded against Lambda's 4 KB)")
for name in sorted(env_params):
    spec = params[name]
    if spec["Type"] == "String" and "AllowedValues" not in spec and "MaxLength" in spec:
        check(f"{int(spec['MaxLength']):,}" in spec.get("Description", ""), f"{name}'s Description does not say its limit ({spec['MaxLength']} characters)")
worst_env = max(env_report)

# ---- alarms watch metrics that exist ---------------------------------------------
# AWS's metrics are published under these dimension sets only; an alarm on any
# other set watches a metric that never has data, and never fires.
# (AWS/DynamoDB ThrottledRequests is per TableName *and* Operation.)
PUBLISHED = {
    ("AWS/Lambda", "Errors"): [{"FunctionName"}],
    ("AWS/Lambda", "Throttles"): [{"FunctionName"}],
    # Stream-sourced functions only ("IteratorAge ... for event source mappings that read from streams").
    ("AWS/Lambda", "IteratorAge"): [{"FunctionName"}],
    # WebSocket APIs publish per ApiId and Stage ("Monitoring WebSocket API execution with CloudWatch metrics").
    ("AWS/ApiGateway", "ConnectCount"): [{"ApiId", "Stage"}, {"ApiId"}],
    ("AWS/ApiGateway", "MessageCount"): [{"ApiId", "Stage"}, {"ApiId"}],
    ("AWS/DynamoDB", "ReadThrottleEvents"): [{"TableName"}],
    ("AWS/DynamoDB", "WriteThrottleEvents"): [{"TableName"}],
    ("AWS/DynamoDB", "ThrottledRequests"): [{"TableName", "Operation"}],
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): [{"QueueName"}],
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"): [{"QueueName"}],
}


def call_args(text, at):
    """The top-level arguments of the call whose "(" is at text[at]."""
    depth, args, cur = 0, [], ""
    for ch in text[at:]:
        if ch in "([{":
            depth += 1
            if depth == 1:
                continue
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return args + [cur.strip()]
        if depth == 1 and ch == ",":
            args, cur = args + [cur.strip()], ""
        else:
            cur += ch
    raise ValueError("unclosed call")


# hookcast's own metrics, as functions/aws/src/emf.rs declares them: EMF
# publishes each metric under each dimension set its envelope declares, and
# under no other (no roll-up across a dimension unless a set leaves it out).
EMF = (ROOT / "functions" / "aws" / "src" / "emf.rs").read_text()
emf_calls = [m.end() - 1 for m in re.finditer(r"(?<!fn )\benvelope\(", EMF)]
check(emf_calls, "emf.rs: no envelope(...) call found; this check cannot see which metrics are published")
for at in emf_calls:
    try:
        _, dims_arg, metrics_arg = call_args(EMF, at)
        dims, names = (ast.literal_eval(a.replace("&", "")) for a in (dims_arg, metrics_arg))
    except (ValueError, SyntaxError):
        failures.append(f"emf.rs: cannot read the envelope call at offset {at} (dimension sets and metric names as literals)")
        continue
    sets = [set(dims)] if all(isinstance(d, str) for d in dims) else [set(d) for d in dims]
    for name in names:
        PUBLISHED.setdefault(("hookcast", name), []).extend(sets)

# A store outage is answered 503 (the handlers do not fail), so Lambda Errors
# never see it; the webhook outcome `unavailable` does, summed over sources.
# That needs a dimension set of Outcome alone: until emf.rs declares one, an
# alarm on it could never fire (and the check above refuses it).
ERRORS_RS = (ROOT / "functions" / "core" / "src" / "error.rs").read_text()
outage_code = re.search(r'Self::Unavailable\s*=>\s*"(\w+)"', ERRORS_RS)
check(outage_code is not None, "functions/core/src/error.rs: no wire code for HookError::Unavailable")
OUTAGE = outage_code.group(1) if outage_code else "unavailable"
outage_alarms = []
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
        if (ns, name) == ("hookcast", "Webhooks") and [(d["Name"], d["Value"]) for d in dims] == [("Outcome", OUTAGE)]:
            outage_alarms.append(key)
functions = {k for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
check(watched_throttles == functions, f"Lambda throttles are watched for {sorted(watched_throttles)}, not every function")
outage_by_outcome = {"Outcome"} in PUBLISHED.get(("hookcast", "Webhooks"), [])
if outage_by_outcome:
    check(outage_alarms, f"emf.rs publishes Webhooks by Outcome alone: alarm on Outcome={OUTAGE} (store outages, answered 503, never reach Lambda Errors)")
outage_note = (f"store-outage alarm {outage_alarms[0]}" if outage_alarms else
               'no store-outage alarm yet (emf.rs declares no Webhooks dimension set ["Outcome"])')

if failures:
    print(f"{TEMPLATE.name}:\n  - " + "\n  - ".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"template.yaml: secret parameters ({len(GOOD)} good and {len(BAD)} bad secrets each), WebSocket stage, secret wiring, "
      f"fan-out share ({share:,}/s), {scenarios} parameter combinations, environments (worst {worst_env[1]}: {worst_env[0]:,} of {ENV_LIMIT:,} bytes) "
      f"and alarm metrics checked; {outage_note}")
