//! Reading a SAM template as CloudFormation would: parameters (defaults,
//! `--parameter-overrides`, their constraints), conditions, and the
//! intrinsics the template uses. What this does not model is an error that
//! names it, never a silent guess.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

/// CloudFormation's pseudo parameters, as the emulated account has them.
pub const ACCOUNT: &str = "123456789012";

/// Resource types the emulator provisions or runs.
pub const MODELLED: &[&str] = &[
    "AWS::Serverless::Function",
    "AWS::Serverless::LayerVersion",
    "AWS::Serverless::HttpApi",
    "AWS::DynamoDB::Table",
    "AWS::SQS::Queue",
    "AWS::SecretsManager::Secret",
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::IntegrationResponse",
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::RouteResponse",
    "AWS::ApiGatewayV2::Stage",
];

/// Resource types with no local behaviour (permissions, logs, alarms): they
/// are accepted and listed at start-up as not emulated.
pub const INERT: &[&str] = &[
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::Lambda::Permission",
    "AWS::Logs::LogGroup",
    "AWS::CloudWatch::Alarm",
    "AWS::ApiGateway::Account",
    "AWS::ApiGatewayV2::Deployment",
    "AWS::SNS::Topic",
    "AWS::SNS::Subscription",
    "AWS::Budgets::Budget",
    "AWS::CloudFront::Distribution",
    "AWS::CloudFront::OriginRequestPolicy",
];

#[derive(Debug)]
pub struct Template {
    pub resources: BTreeMap<String, Resource>,
    /// The Resources section as written (every attribute of every resource).
    pub raw_resources: Map<String, Value>,
    pub globals_function: Map<String, Value>,
    pub params: HashMap<String, String>,
    pub conditions: HashMap<String, bool>,
    pub region: String,
    pub stack: String,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub kind: String,
    pub properties: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub condition: Option<String>,
}

/// A YAML node with CloudFormation's short tags turned into their long
/// `{"Fn::…": …}` form, as JSON.
fn to_json(v: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => json!(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64())
            }
        }
        Y::String(s) => json!(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(to_json).collect::<Result<_, _>>()?),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let k = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("a mapping key that is not a string: {other:?}")),
                };
                out.insert(k, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let inner = to_json(t.value)?;
            match tag {
                "Ref" => json!({ "Ref": inner }),
                "Condition" => json!({ "Condition": inner }),
                "GetAtt" => {
                    let parts = match inner {
                        Value::String(s) => match s.split_once('.') {
                            Some((a, b)) => json!([a, b]),
                            None => return Err(format!("!GetAtt {s}: expected Resource.Attribute")),
                        },
                        other => other,
                    };
                    json!({ "Fn::GetAtt": parts })
                }
                "Sub" | "Join" | "If" | "Not" | "Equals" | "And" | "Or" | "Select" | "Split" | "FindInMap" | "Base64"
                | "GetAZs" | "ImportValue" | "Cidr" | "Length" | "ToJsonString" => {
                    json!({ format!("Fn::{tag}"): inner })
                }
                other => return Err(format!("the YAML tag !{other} is not a CloudFormation intrinsic")),
            }
        }
    })
}

/// What is wrong with a template, its parameters or a reference in it;
/// each says so as a person reads it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `--parameter-overrides` words that are neither form.
    #[error("{0}")]
    Overrides(String),
    /// The template is not one hookcast emulate takes: its YAML, a section,
    /// a resource type, a parameter's value, a condition or a rule.
    #[error("{0}")]
    Invalid(String),
    /// An intrinsic function or a reference that does not resolve.
    #[error("{0}")]
    Unresolved(String),
}

/// For the emulator's own checks, which word their errors as text.
impl From<TemplateError> for String {
    fn from(e: TemplateError) -> Self {
        e.to_string()
    }
}

/// `--parameter-overrides` in SAM's forms: `K=V` words, or one string of
/// `ParameterKey=K,ParameterValue=V` pairs.
pub fn parse_overrides(words: &[String]) -> Result<HashMap<String, String>, TemplateError> {
    let mut out = HashMap::new();
    for w in words {
        if let Some(rest) = w.strip_prefix("ParameterKey=") {
            let (k, v) = rest.split_once(",ParameterValue=").ok_or_else(|| {
                TemplateError::Overrides(format!("--parameter-overrides {w:?}: expected ParameterKey=K,ParameterValue=V"))
            })?;
            out.insert(k.to_owned(), v.to_owned());
        } else if let Some((k, v)) = w.split_once('=') {
            out.insert(k.to_owned(), v.to_owned());
        } else {
            return Err(TemplateError::Overrides(format!("--parameter-overrides {w:?}: expected Key=Value")));
        }
    }
    Ok(out)
}

fn param_default(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(a) => Some(a.iter().filter_map(param_default).collect::<Vec<_>>().join(",")),
        _ => None,
    }
}

/// A parameter's value against its constraints, as CloudFormation checks them.
fn check_param(name: &str, spec: &Map<String, Value>, value: &str) -> Result<(), String> {
    let why = || spec.get("ConstraintDescription").and_then(Value::as_str).map(|d| format!(" ({d})")).unwrap_or_default();
    if let Some(p) = spec.get("AllowedPattern").and_then(Value::as_str) {
        // CloudFormation matches the whole value.
        let re = regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| format!("parameter {name}: AllowedPattern {p:?}: {e}"))?;
        if !re.is_match(value) {
            return Err(format!("parameter {name} must match pattern {p}{}", why()));
        }
    }
    if let Some(allowed) = spec.get("AllowedValues").and_then(Value::as_array) {
        if !allowed.iter().filter_map(param_default).any(|a| a == value) {
            return Err(format!("parameter {name} must be one of {}", Value::Array(allowed.clone())));
        }
    }
    let len = value.chars().count() as u64;
    if let Some(min) = spec.get("MinLength").and_then(Value::as_u64) {
        if len < min {
            return Err(format!("parameter {name} must be at least {min} characters{}", why()));
        }
    }
    if let Some(max) = spec.get("MaxLength").and_then(Value::as_u64) {
        if len > max {
            return Err(format!("parameter {name} must be at most {max} characters{}", why()));
        }
    }
    if spec.get("Type").and_then(Value::as_str) == Some("Number") {
        let n: f64 = value.parse().map_err(|_| format!("parameter {name} must be a number, not {value:?}"))?;
        if let Some(min) = spec.get("MinValue").and_then(Value::as_f64) {
            if n < min {
                return Err(format!("parameter {name} must be at least {min}{}", why()));
            }
        }
        if let Some(max) = spec.get("MaxValue").and_then(Value::as_f64) {
            if n > max {
                return Err(format!("parameter {name} must be at most {max}{}", why()));
            }
        }
    }
    Ok(())
}

impl Template {
    pub fn parse(text: &str, overrides: &HashMap<String, String>, region: &str, stack: &str) -> Result<Self, TemplateError> {
        Self::parse_text(text, overrides, region, stack).map_err(TemplateError::Invalid)
    }

    fn parse_text(text: &str, overrides: &HashMap<String, String>, region: &str, stack: &str) -> Result<Self, String> {
        let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("template is not YAML: {e}"))?;
        let root = to_json(yaml)?;
        let root = root.as_object().ok_or("template: not a mapping")?;
        for key in root.keys() {
            if ![
                "AWSTemplateFormatVersion",
                "Transform",
                "Description",
                "Parameters",
                "Conditions",
                "Rules",
                "Globals",
                "Resources",
                "Outputs",
                "Metadata",
            ]
            .contains(&key.as_str())
            {
                return Err(format!("template section {key} is not modelled by hookcast emulate"));
            }
        }
        let mut params = HashMap::new();
        let specs = root.get("Parameters").and_then(Value::as_object).cloned().unwrap_or_default();
        for k in overrides.keys() {
            if !specs.contains_key(k) {
                return Err(format!("--parameter-overrides: the template has no parameter {k}"));
            }
        }
        let mut missing = vec![];
        let mut problems = vec![];
        for (name, spec) in &specs {
            let spec = spec.as_object().ok_or_else(|| format!("parameter {name}: not a mapping"))?;
            let value = overrides.get(name).cloned().or_else(|| spec.get("Default").and_then(param_default));
            match value {
                None => missing.push(name.clone()),
                Some(v) => match check_param(name, spec, &v) {
                    Ok(()) => {
                        params.insert(name.clone(), v);
                    }
                    Err(e) => problems.push(e),
                },
            }
        }
        if !missing.is_empty() {
            problems.insert(
                0,
                format!(
                    "parameters {} must have values (--parameter-overrides {})",
                    missing.join(", "),
                    missing.iter().map(|m| format!("{m}=…")).collect::<Vec<_>>().join(" ")
                ),
            );
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let mut resources = BTreeMap::new();
        for (id, r) in root.get("Resources").and_then(Value::as_object).ok_or("template has no Resources")? {
            let r = r.as_object().ok_or_else(|| format!("resource {id}: not a mapping"))?;
            let kind = r.get("Type").and_then(Value::as_str).ok_or_else(|| format!("resource {id}: no Type"))?.to_owned();
            if !MODELLED.contains(&kind.as_str()) && !INERT.contains(&kind.as_str()) {
                return Err(format!("resource {id}: type {kind} is not modelled by hookcast emulate"));
            }
            resources.insert(
                id.clone(),
                Resource {
                    kind,
                    properties: r.get("Properties").and_then(Value::as_object).cloned().unwrap_or_default(),
                    metadata: r.get("Metadata").and_then(Value::as_object).cloned().unwrap_or_default(),
                    condition: r.get("Condition").and_then(Value::as_str).map(str::to_owned),
                },
            );
        }
        let globals = root.get("Globals").and_then(Value::as_object).cloned().unwrap_or_default();
        for k in globals.keys() {
            if k != "Function" {
                return Err(format!("Globals.{k} is not modelled by hookcast emulate"));
            }
        }
        let mut t = Template {
            resources,
            raw_resources: root.get("Resources").and_then(Value::as_object).cloned().unwrap_or_default(),
            globals_function: globals.get("Function").and_then(Value::as_object).cloned().unwrap_or_default(),
            params,
            conditions: HashMap::new(),
            region: region.to_owned(),
            stack: stack.to_owned(),
        };
        let conds = root.get("Conditions").and_then(Value::as_object).cloned().unwrap_or_default();
        // Conditions may refer to each other: resolve until none is left.
        let mut left: Vec<_> = conds.into_iter().collect();
        while !left.is_empty() {
            let before = left.len();
            let mut next = vec![];
            for (name, expr) in left {
                match t.condition_value(&expr, &Attrs::default()) {
                    Ok(b) => {
                        t.conditions.insert(name, b);
                    }
                    Err(_) => next.push((name, expr)),
                }
            }
            if next.len() == before {
                let (name, expr) = &next[0];
                return Err(format!("condition {name}: {}", t.condition_value(expr, &Attrs::default()).unwrap_err()));
            }
            left = next;
        }
        t.check_rules(root.get("Rules"))?;
        Ok(t)
    }

    /// The template's `Rules`: each assertion whose rule applies must hold,
    /// or the stack is not created (CloudFormation answers with the
    /// assertion's description).
    fn check_rules(&self, rules: Option<&Value>) -> Result<(), String> {
        for (name, rule) in rules.and_then(Value::as_object).into_iter().flatten() {
            let applies = match rule.get("RuleCondition") {
                Some(c) => self.condition_value(c, &Attrs::default()).map_err(|e| format!("rule {name}: {e}"))?,
                None => true,
            };
            if !applies {
                continue;
            }
            for a in rule.get("Assertions").and_then(Value::as_array).into_iter().flatten() {
                let holds = self.condition_value(&a["Assert"], &Attrs::default()).map_err(|e| format!("rule {name}: {e}"))?;
                if !holds {
                    let why = a.get("AssertDescription").map(str_of).unwrap_or_else(|| "an assertion does not hold".into());
                    return Err(format!("rule {name}: {why}"));
                }
            }
        }
        Ok(())
    }

    /// Resources whose Condition holds.
    pub fn live(&self) -> impl Iterator<Item = (&String, &Resource)> {
        self.resources
            .iter()
            .filter(|(_, r)| r.condition.as_ref().is_none_or(|c| self.conditions.get(c).copied().unwrap_or(false)))
    }

    fn condition_value(&self, v: &Value, attrs: &Attrs) -> Result<bool, String> {
        match self.resolve_value(v, attrs)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
            other => Err(format!("a condition that is not true or false: {other}")),
        }
    }

    /// The value of `v` with every intrinsic resolved. `attrs` holds the
    /// provisioned resources' `Ref` and `GetAtt` values.
    pub fn resolve(&self, v: &Value, attrs: &Attrs) -> Result<Value, TemplateError> {
        self.resolve_value(v, attrs).map_err(TemplateError::Unresolved)
    }

    fn resolve_value(&self, v: &Value, attrs: &Attrs) -> Result<Value, String> {
        match v {
            Value::Array(a) => {
                let mut out = vec![];
                for x in a {
                    let r = self.resolve_value(x, attrs)?;
                    if r != json!({"__NoValue": true}) {
                        out.push(r);
                    }
                }
                Ok(Value::Array(out))
            }
            Value::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().expect("one entry");
                match k.as_str() {
                    "Ref" => self.reference(arg.as_str().ok_or("Ref of a non-string")?, attrs),
                    "Condition" => {
                        let c = arg.as_str().ok_or("Condition of a non-string")?;
                        self.conditions.get(c).map(|b| json!(b)).ok_or_else(|| format!("no condition {c}"))
                    }
                    "Fn::GetAtt" => {
                        let parts: Vec<String> = match arg {
                            Value::String(s) => s.splitn(2, '.').map(str::to_owned).collect(),
                            Value::Array(a) => {
                                a.iter().map(|x| self.resolve_value(x, attrs).map(|v| str_of(&v))).collect::<Result<_, _>>()?
                            }
                            _ => return Err("Fn::GetAtt: expected [Resource, Attribute]".into()),
                        };
                        if parts.len() != 2 {
                            return Err(format!("Fn::GetAtt {parts:?}: expected [Resource, Attribute]"));
                        }
                        attrs.get_att(&parts[0], &parts[1]).map(Value::String).map_err(String::from)
                    }
                    "Fn::Sub" => {
                        let (text, vars) = match arg {
                            Value::String(s) => (s.clone(), Map::new()),
                            Value::Array(a) if a.len() == 2 => (
                                a[0].as_str().ok_or("Fn::Sub: the first item must be a string")?.to_owned(),
                                a[1].as_object().cloned().ok_or("Fn::Sub: the second item must be a mapping")?,
                            ),
                            _ => return Err("Fn::Sub: expected a string or [string, mapping]".into()),
                        };
                        let mut local = HashMap::new();
                        for (k, v) in vars {
                            local.insert(k, str_of(&self.resolve_value(&v, attrs)?));
                        }
                        self.sub(&text, &local, attrs).map(Value::String)
                    }
                    "Fn::Join" => {
                        let a = arg.as_array().filter(|a| a.len() == 2).ok_or("Fn::Join: expected [delimiter, list]")?;
                        let sep = a[0].as_str().ok_or("Fn::Join: the delimiter must be a string")?;
                        let list = self.resolve_value(&a[1], attrs)?;
                        let items = list.as_array().ok_or("Fn::Join: the second item must be a list")?;
                        Ok(Value::String(items.iter().map(str_of).collect::<Vec<_>>().join(sep)))
                    }
                    "Fn::Split" => {
                        let a = arg.as_array().filter(|a| a.len() == 2).ok_or("Fn::Split: expected [delimiter, string]")?;
                        let sep = a[0].as_str().ok_or("Fn::Split: the delimiter must be a string")?;
                        let s = str_of(&self.resolve_value(&a[1], attrs)?);
                        Ok(Value::Array(s.split(sep).map(|p| json!(p)).collect()))
                    }
                    "Fn::Select" => {
                        let a = arg.as_array().filter(|a| a.len() == 2).ok_or("Fn::Select: expected [index, list]")?;
                        let i: usize = str_of(&self.resolve_value(&a[0], attrs)?)
                            .parse()
                            .map_err(|_| "Fn::Select: the index must be a number")?;
                        let list = self.resolve_value(&a[1], attrs)?;
                        list.as_array().and_then(|l| l.get(i)).cloned().ok_or_else(|| format!("Fn::Select: no item {i}"))
                    }
                    "Fn::If" => {
                        let a = arg.as_array().filter(|a| a.len() == 3).ok_or("Fn::If: expected [condition, then, else]")?;
                        let c = a[0].as_str().ok_or("Fn::If: the condition must be a name")?;
                        let b = *self.conditions.get(c).ok_or_else(|| format!("Fn::If: no condition {c}"))?;
                        self.resolve_value(&a[if b { 1 } else { 2 }], attrs)
                    }
                    "Fn::Not" => {
                        let a = arg.as_array().filter(|a| a.len() == 1).ok_or("Fn::Not: expected [condition]")?;
                        Ok(json!(!self.condition_value(&a[0], attrs)?))
                    }
                    "Fn::And" | "Fn::Or" => {
                        let a = arg.as_array().ok_or("Fn::And/Or: expected a list")?;
                        let vals = a.iter().map(|c| self.condition_value(c, attrs)).collect::<Result<Vec<_>, _>>()?;
                        Ok(json!(if k == "Fn::And" { vals.iter().all(|b| *b) } else { vals.iter().any(|b| *b) }))
                    }
                    "Fn::Equals" => {
                        let a = arg.as_array().filter(|a| a.len() == 2).ok_or("Fn::Equals: expected [a, b]")?;
                        Ok(json!(str_of(&self.resolve_value(&a[0], attrs)?) == str_of(&self.resolve_value(&a[1], attrs)?)))
                    }
                    k if k.starts_with("Fn::") => Err(format!("the intrinsic {k} is not modelled by hookcast emulate")),
                    _ => Ok(json!({ k.clone(): self.resolve_value(arg, attrs)? })),
                }
            }
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    let r = self.resolve_value(v, attrs)?;
                    if r != json!({"__NoValue": true}) {
                        out.insert(k.clone(), r);
                    }
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn pseudo(&self, name: &str) -> Option<String> {
        Some(match name {
            "AWS::Region" => self.region.clone(),
            "AWS::AccountId" => ACCOUNT.into(),
            "AWS::Partition" => "aws".into(),
            "AWS::StackName" => self.stack.clone(),
            "AWS::StackId" => format!("arn:aws:cloudformation:{}:{ACCOUNT}:stack/{}/emulated", self.region, self.stack),
            "AWS::URLSuffix" => "amazonaws.com".into(),
            _ => return None,
        })
    }

    fn reference(&self, name: &str, attrs: &Attrs) -> Result<Value, String> {
        if name == "AWS::NoValue" {
            return Ok(json!({"__NoValue": true}));
        }
        if let Some(p) = self.pseudo(name) {
            return Ok(Value::String(p));
        }
        if let Some(p) = self.params.get(name) {
            return Ok(Value::String(p.clone()));
        }
        attrs.reference(name).map(Value::String).map_err(String::from)
    }

    fn sub(&self, text: &str, local: &HashMap<String, String>, attrs: &Attrs) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let end = after.find('}').ok_or_else(|| format!("Fn::Sub {text:?}: an unclosed ${{"))?;
            let name = &after[..end];
            if let Some(lit) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(lit);
                out.push('}');
            } else if let Some(v) = local.get(name) {
                out.push_str(v);
            } else if let Some((res, att)) = name.split_once('.').filter(|_| !name.starts_with("AWS::")) {
                out.push_str(&attrs.get_att(res, att)?);
            } else {
                out.push_str(&str_of(&self.reference(name, attrs)?));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A scalar as CloudFormation passes it on: numbers and booleans as text.
pub fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Provisioned resources: each one's `Ref` value and its attributes.
#[derive(Debug, Default, Clone)]
pub struct Attrs {
    refs: HashMap<String, String>,
    atts: HashMap<(String, String), String>,
}

impl Attrs {
    pub fn set_ref(&mut self, id: &str, v: impl Into<String>) {
        self.refs.insert(id.to_owned(), v.into());
    }
    pub fn set_att(&mut self, id: &str, att: &str, v: impl Into<String>) {
        self.atts.insert((id.to_owned(), att.to_owned()), v.into());
    }
    pub fn reference(&self, id: &str) -> Result<String, TemplateError> {
        self.refs.get(id).cloned().ok_or_else(|| TemplateError::Unresolved(format!("Ref {id}: no such parameter or resource")))
    }
    pub fn get_att(&self, id: &str, att: &str) -> Result<String, TemplateError> {
        self.atts
            .get(&(id.to_owned(), att.to_owned()))
            .cloned()
            .ok_or_else(|| TemplateError::Unresolved(format!("Fn::GetAtt {id}.{att}: not modelled")))
    }
    /// The logical id whose attribute `att` is `value` (e.g. the queue with that ARN).
    pub fn owner_of(&self, att: &str, value: &str) -> Option<String> {
        self.atts.iter().find(|((_, a), v)| a == att && *v == value).map(|((id, _), _)| id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"
Parameters:
  Stage: { Type: String, Default: live, AllowedPattern: "^[a-z]+$" }
  Secret: { Type: String, MinLength: 4 }
  Topic: { Type: String, Default: "" }
  N: { Type: Number, Default: 8, MinValue: 1, MaxValue: 64 }
Conditions:
  HasTopic: !Not [!Equals [!Ref Topic, ""]]
  Both: !And [!Condition HasTopic, !Equals [!Ref Stage, live]]
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties:
      Name: !Sub "${AWS::StackName}-${Stage}-${!Literal}-${Q.Arn}"
      Tags: !If [HasTopic, [a], !Ref "AWS::NoValue"]
      Joined: !Join [",", [!Ref Secret, !GetAtt Q.Arn, !Ref N]]
"#;

    fn attrs() -> Attrs {
        let mut a = Attrs::default();
        a.set_ref("Q", "https://q");
        a.set_att("Q", "Arn", "arn:q");
        a
    }

    #[test]
    fn resolves_parameters_conditions_and_intrinsics() {
        let over = parse_overrides(&["Secret=abcd".into()]).unwrap();
        let t = Template::parse(T, &over, "eu-west-1", "st").unwrap();
        assert!(!t.conditions["HasTopic"]);
        assert!(!t.conditions["Both"]);
        let q = &t.resources["Q"].properties;
        let r = t.resolve(&Value::Object(q.clone()), &attrs()).unwrap();
        assert_eq!(r["Name"], "st-live-${Literal}-arn:q");
        assert!(r.get("Tags").is_none(), "AWS::NoValue removes the key: {r}");
        assert_eq!(r["Joined"], "abcd,arn:q,8");
    }

    #[test]
    fn a_rule_that_does_not_hold_stops_the_stack_with_its_description() {
        let text = r#"
Parameters:
  Acl: { Type: String, Default: "" }
  Secret: { Type: String, Default: "" }
Rules:
  AclNeedsSecret:
    RuleCondition: !Not [!Equals [!Ref Acl, ""]]
    Assertions:
      - Assert: !Not [!Equals [!Ref Secret, ""]]
        AssertDescription: "EdgeWebAclArn needs EdgeOriginSecret"
Resources:
  Q: { Type: AWS::SQS::Queue }
"#;
        let parse = |o: &[(&str, &str)]| {
            let o: HashMap<String, String> = o.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Template::parse(text, &o, "us-east-1", "s").map_err(|e| e.to_string())
        };
        assert!(parse(&[]).is_ok(), "the rule does not apply");
        assert!(parse(&[("Acl", "arn"), ("Secret", "x")]).is_ok());
        assert_eq!(parse(&[("Acl", "arn")]).unwrap_err(), "rule AclNeedsSecret: EdgeWebAclArn needs EdgeOriginSecret");
    }

    #[test]
    fn refuses_what_cloudformation_refuses() {
        let err = Template::parse(T, &HashMap::new(), "r", "s").unwrap_err().to_string();
        assert!(err.contains("Secret must have values"), "{err}");
        let err = Template::parse(T, &parse_overrides(&["Secret=ab".into()]).unwrap(), "r", "s").unwrap_err().to_string();
        assert!(err.contains("at least 4 characters"), "{err}");
        let err = Template::parse(T, &parse_overrides(&["Secret=abcd".into(), "N=65".into()]).unwrap(), "r", "s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 64"), "{err}");
        let err = Template::parse(T, &parse_overrides(&["Secret=abcd".into(), "Nope=1".into()]).unwrap(), "r", "s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no parameter Nope"), "{err}");
        let err = Template::parse("Resources:\n  X: { Type: AWS::EC2::Instance }\n", &HashMap::new(), "r", "s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS::EC2::Instance is not modelled"), "{err}");
        let t = Template::parse(
            "Resources:\n  X: { Type: AWS::SQS::Queue, Properties: { A: !GetAZs '' } }\n",
            &HashMap::new(),
            "r",
            "s",
        )
        .unwrap();
        let err = t.resolve(&Value::Object(t.resources["X"].properties.clone()), &Attrs::default()).unwrap_err().to_string();
        assert!(err.contains("Fn::GetAZs is not modelled"), "{err}");
    }

    #[test]
    fn reads_the_project_template() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).unwrap();
        let over = parse_overrides(&[
            "NetlifySecret=0123456789abcdef".into(),
            "ZapierToken=0123456789abcdef".into(),
            "AllowedOrigins=http://127.0.0.1".into(),
            "AlertEmail=none".into(),
        ])
        .unwrap();
        let t = Template::parse(&text, &over, "us-east-1", "hookcast").unwrap();
        assert!(!t.conditions["HasAlarmTopic"]);
        assert_eq!(t.live().filter(|(_, r)| r.kind == "AWS::Serverless::Function").count(), 6);
        let bad = parse_overrides(&[
            "NetlifySecret=has\"quote-0123456789".into(),
            "ZapierToken=0123456789abcdef".into(),
            "AllowedOrigins=x".into(),
            "AlertEmail=none".into(),
        ])
        .unwrap();
        let err = Template::parse(&text, &bad, "us-east-1", "hookcast").unwrap_err().to_string();
        assert!(err.contains("NetlifySecret must match"), "{err}");
    }
}
