//! Workflow definitions: named, versioned, immutable lists of steps, and the
//! rules a definition must follow before it is stored.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use omninode_core::StampFormat;
use serde::{Deserialize, Serialize};

/// The built-in definition StartWorkflow runs when none is named.
pub const BUILT_IN: &str = "stamping";
/// Most steps in a definition.
pub const MAX_STEPS: usize = 50;
/// Longest a step may wait or run (30 days).
pub const MAX_TIMEOUT_MS: u32 = 30 * 24 * 3600 * 1000;
/// Longest a timer may wait (366 days).
pub const MAX_TIMER_MS: u64 = 366 * 24 * 3600 * 1000;

/// A stored definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub description: String,
    pub steps: Vec<StepDefinition>,
    pub created_at: DateTime<Utc>,
}

impl Definition {
    /// `name@version`: how a workflow pins the definition it runs.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The step named `name`, with its index.
    pub fn step(&self, name: &str) -> Option<(usize, &StepDefinition)> {
        self.steps.iter().enumerate().find(|(_, step)| step.name == name)
    }
}

/// One step of a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<StepRetry>,
    pub kind: StepKind,
}

/// Retries of a step's transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRetry {
    pub max_attempts: u32,
    pub initial_backoff_ms: u32,
    pub max_backoff_ms: u32,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Hash,
    Stamp { format: StampFormat },
    Http { method: String, url: String, headers: BTreeMap<String, String>, body: String },
    Approval { description: String },
    Timer(TimerWait),
    Llm { model: String, prompt: String, system: String },
}

/// How long a timer step waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerWait {
    Duration { ms: u64 },
    Until { at: DateTime<Utc> },
}

/// What is wrong with a definition: the step (if any), the field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionProblem {
    pub step: Option<String>,
    pub field: String,
    pub problem: String,
}

impl StepKind {
    /// The kind's name, as in the contract's `oneof`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Stamp { .. } => "stamp",
            Self::Http { .. } => "http",
            Self::Approval { .. } => "approval",
            Self::Timer(_) => "timer",
            Self::Llm { .. } => "llm",
        }
    }
}

impl std::fmt::Display for DefinitionProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.step {
            Some(step) => write!(f, "step {step:?}: {}: {}", self.field, self.problem),
            None => write!(f, "{}: {}", self.field, self.problem),
        }
    }
}

fn problem(step: Option<&str>, field: &str, why: impl Into<String>) -> DefinitionProblem {
    DefinitionProblem { step: step.map(str::to_owned), field: field.to_owned(), problem: why.into() }
}

/// A name of a definition or a step: a lowercase letter, then up to 63
/// lowercase letters, digits, '-' or '_'.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// `name` or `name@version` as StartWorkflow and GetWorkflowDefinition take it.
pub fn parse_reference(reference: &str) -> Result<(String, Option<u32>), String> {
    let (name, version) = match reference.split_once('@') {
        None => (reference, None),
        Some((name, version)) => {
            let version: u32 = version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                format!("{:?} is not a version (1, 2, …)", omninode_core::limits::prefix(version, 20))
            })?;
            (name, Some(version))
        }
    };
    if !is_name(name) {
        return Err(format!(
            "{:?} is not a definition name (a lowercase letter, then letters, digits, '-' or '_'; at most 64)",
            omninode_core::limits::prefix(name, 70)
        ));
    }
    Ok((name.to_owned(), version))
}

/// Checks a definition before it is stored; the first problem found.
pub fn check(name: &str, steps: &[StepDefinition]) -> Result<(), DefinitionProblem> {
    if !is_name(name) {
        return Err(problem(None, "name", "must be a lowercase letter, then letters, digits, '-' or '_' (at most 64)"));
    }
    if name == BUILT_IN {
        return Err(problem(None, "name", format!("{BUILT_IN:?} is the built-in definition")));
    }
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(problem(None, "steps", format!("a definition has 1 to {MAX_STEPS} steps, not {}", steps.len())));
    }
    let mut earlier: HashSet<&str> = HashSet::new();
    for step in steps {
        let here = Some(step.name.as_str());
        if !is_name(&step.name) {
            return Err(problem(
                Some(omninode_core::limits::prefix(&step.name, 70)),
                "name",
                "must be a lowercase letter, then letters, digits, '-' or '_' (at most 64)",
            ));
        }
        if earlier.contains(step.name.as_str()) {
            return Err(problem(here, "name", "is used by an earlier step"));
        }
        if step.timeout_ms.is_some_and(|ms| ms > MAX_TIMEOUT_MS) {
            return Err(problem(here, "timeout_ms", format!("is over {MAX_TIMEOUT_MS} (30 days)")));
        }
        if let Some(retry) = step.retry {
            if !(1..=100).contains(&retry.max_attempts) {
                return Err(problem(here, "retry.max_attempts", "must be 1 to 100"));
            }
            if retry.max_backoff_ms < retry.initial_backoff_ms {
                return Err(problem(here, "retry.max_backoff_ms", "is below retry.initial_backoff_ms"));
            }
        }
        check_kind(step, &earlier)?;
        earlier.insert(step.name.as_str());
    }
    Ok(())
}

fn check_kind(step: &StepDefinition, earlier: &HashSet<&str>) -> Result<(), DefinitionProblem> {
    let here = Some(step.name.as_str());
    match &step.kind {
        StepKind::Hash | StepKind::Stamp { .. } | StepKind::Approval { .. } => Ok(()),
        StepKind::Http { method, url, headers, body } => {
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                return Err(problem(here, "http.method", "must be GET, POST, PUT, PATCH or DELETE"));
            }
            if url.is_empty() {
                return Err(problem(here, "http.url", "is required"));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(problem(here, "http.url", "must be an absolute http:// or https:// URL"));
            }
            check_template(here, "http.url", url, earlier)?;
            for (header, value) in headers {
                if header.is_empty() || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
                    return Err(problem(
                        here,
                        "http.headers",
                        format!("{:?} is not a header name", omninode_core::limits::prefix(header, 40)),
                    ));
                }
                check_template(here, "http.headers", value, earlier)?;
            }
            check_template(here, "http.body", body, earlier)
        }
        StepKind::Timer(TimerWait::Duration { ms }) if *ms == 0 || *ms > MAX_TIMER_MS => Err(problem(
            here,
            "timer.duration_ms",
            format!("must be 1 to {MAX_TIMER_MS} (366 days), or set timer.until"),
        )),
        StepKind::Timer(_) => Ok(()),
        StepKind::Llm { prompt, system, .. } => {
            if prompt.trim().is_empty() {
                return Err(problem(here, "llm.prompt", "is required"));
            }
            check_template(here, "llm.prompt", prompt, earlier)?;
            check_template(here, "llm.system", system, earlier)
        }
    }
}

/// Every `${…}` in `text` names the input, the workflow, or an earlier step.
fn check_template(
    step: Option<&str>,
    field: &str,
    text: &str,
    earlier: &HashSet<&str>,
) -> Result<(), DefinitionProblem> {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(problem(step, field, "has a ${ without its closing }"));
        };
        let expression = &after[..end];
        let parts: Vec<&str> = expression.split('.').collect();
        let known = match parts.as_slice() {
            ["input", "content" | "file_path" | "namespace" | "content_type"] => true,
            ["input", "context", key] => !key.is_empty(),
            ["workflow", "id"] => true,
            ["steps", name, "output", ..] => {
                if !earlier.contains(name) {
                    return Err(problem(
                        step,
                        field,
                        format!("${{{expression}}} names {name:?}, which is not an earlier step"),
                    ));
                }
                parts[3..].iter().all(|p| !p.is_empty())
            }
            _ => false,
        };
        if !known {
            return Err(problem(
                step,
                field,
                format!(
                    "${{{}}} is not input.content, input.file_path, input.namespace, input.content_type, input.context.KEY, workflow.id or steps.NAME.output[.FIELD…]",
                    omninode_core::limits::prefix(expression, 60)
                ),
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, kind: StepKind) -> StepDefinition {
        StepDefinition { name: name.into(), timeout_ms: None, retry: None, kind }
    }

    fn http(url: &str, body: &str) -> StepKind {
        StepKind::Http { method: "POST".into(), url: url.into(), headers: BTreeMap::new(), body: body.into() }
    }

    #[test]
    fn the_issue_example_is_valid() {
        let steps = [
            step("review", StepKind::Approval { description: String::new() }),
            step("notify", http("http://127.0.0.1:9/hook", r#"{"doc":"${input.content}"}"#)),
        ];
        assert_eq!(check("release-notes", &steps), Ok(()));
    }

    #[test]
    fn bad_definitions_name_the_step_and_the_field() {
        let approval = || step("review", StepKind::Approval { description: String::new() });
        let cases: Vec<(&str, Vec<StepDefinition>, &str)> = vec![
            ("Bad Name", vec![approval()], "name:"),
            ("stamping", vec![approval()], "built-in"),
            ("empty", vec![], "steps: a definition has 1 to"),
            ("dup", vec![approval(), approval()], r#"step "review": name: is used by an earlier step"#),
            ("nourl", vec![step("notify", http("", ""))], r#"step "notify": http.url: is required"#),
            ("relative", vec![step("notify", http("/hook", ""))], "http.url: must be an absolute"),
            ("unknown", vec![step("notify", http("http://x/${steps.later.output}", ""))], "not an earlier step"),
            (
                "forward",
                vec![step("a", http("http://x", "${steps.b.output}")), step("b", approval().kind)],
                "not an earlier step",
            ),
            ("badexpr", vec![step("a", http("http://x", "${secrets.key}"))], "is not input.content"),
            ("open", vec![step("a", http("http://x", "${input.content"))], "without its closing"),
            ("timer", vec![step("wait", StepKind::Timer(TimerWait::Duration { ms: 0 }))], "timer.duration_ms"),
            (
                "llm",
                vec![step("ask", StepKind::Llm { model: String::new(), prompt: " ".into(), system: String::new() })],
                "llm.prompt: is required",
            ),
        ];
        for (name, steps, says) in cases {
            let err = check(name, &steps).expect_err(name).to_string();
            assert!(err.contains(says), "{name}: {err}");
        }
        let mut retried = approval();
        retried.retry = Some(StepRetry { max_attempts: 0, initial_backoff_ms: 1, max_backoff_ms: 1 });
        assert!(check("retry", &[retried]).unwrap_err().to_string().contains("retry.max_attempts"));
        let mut method = step("a", http("http://x", ""));
        if let StepKind::Http { method: m, .. } = &mut method.kind {
            *m = "TRACE".into();
        }
        assert!(check("method", &[method]).unwrap_err().to_string().contains("http.method"));
    }

    #[test]
    fn references_are_a_name_and_an_optional_version() {
        assert_eq!(parse_reference("release-notes"), Ok(("release-notes".into(), None)));
        assert_eq!(parse_reference("release-notes@3"), Ok(("release-notes".into(), Some(3))));
        assert!(parse_reference("release-notes@0").is_err());
        assert!(parse_reference("Release").is_err());
        assert!(parse_reference("a@b").is_err());
    }
}
