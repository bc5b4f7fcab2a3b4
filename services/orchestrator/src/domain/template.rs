//! Step templates: `${input.content}`, `${input.file_path}`,
//! `${input.namespace}`, `${input.content_type}`, `${input.context.KEY}`,
//! `${workflow.id}`, `${steps.NAME.output}` and `${steps.NAME.output.FIELD…}`
//! (a number indexes an array). What a value looks like depends on where it
//! goes: percent-encoded in a URL, JSON-escaped in a JSON body (an object,
//! array, number or boolean as its JSON text), as is in a header or a prompt.
//! Which expressions are allowed is checked with the definition
//! ([`super::definition::check`]); a value missing when the step runs
//! (a field the earlier output lacks) fails the step.

use serde_json::Value;

use super::workflow::Workflow;

/// Where a rendered template goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Url,
    Json,
    Text,
}

/// `text` with every `${…}` replaced from `workflow`.
pub fn render(text: &str, workflow: &Workflow, target: Target) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("a ${ without its closing }")?;
        let expression = &after[..end];
        let value = lookup(expression, workflow)?;
        out.push_str(&format_value(&value, target));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup(expression: &str, workflow: &Workflow) -> Result<Value, String> {
    let parts: Vec<&str> = expression.split('.').collect();
    let input = &workflow.input;
    let text = |s: &str| Ok(Value::String(s.to_owned()));
    match parts.as_slice() {
        ["input", "content"] => text(&input.content),
        ["input", "file_path"] => text(&input.file_path),
        ["input", "content_type"] => text(&input.content_type),
        ["input", "namespace"] => text(&workflow.namespace),
        ["input", "context", key] => input
            .context
            .get(*key)
            .map(|v| Value::String(v.clone()))
            .ok_or_else(|| format!("${{{expression}}}: the input has no context key {key:?}")),
        ["workflow", "id"] => text(&workflow.id),
        ["steps", name, "output", path @ ..] => {
            let mut value =
                workflow.output_of(name).ok_or_else(|| format!("${{{expression}}}: step {name:?} has no output"))?;
            for (depth, field) in path.iter().enumerate() {
                let next = match value {
                    Value::Object(map) => map.get(*field),
                    Value::Array(items) => field.parse::<usize>().ok().and_then(|i| items.get(i)),
                    _ => None,
                };
                value = next.ok_or_else(|| {
                    let at = ["steps", name, "output"].iter().chain(&path[..depth]).copied().collect::<Vec<_>>();
                    format!("${{{expression}}}: {} has no field {field:?}", at.join("."))
                })?;
            }
            Ok(value.clone())
        }
        _ => Err(format!("${{{expression}}} is not a known expression")),
    }
}

fn format_value(value: &Value, target: Target) -> String {
    let plain = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match (target, value) {
        (Target::Text, _) => plain,
        (Target::Url, _) => percent_encode(&plain),
        // Inside a JSON body: a string is escaped (the template supplies the quotes).
        (Target::Json, Value::String(s)) => {
            let quoted = Value::String(s.clone()).to_string();
            quoted[1..quoted.len() - 1].to_owned()
        }
        (Target::Json, other) => other.to_string(),
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::workflow::{StepOutcome, StepRecord, WorkflowInput};

    fn workflow() -> Workflow {
        let input = WorkflowInput {
            content: "say \"hi\"\nnow".into(),
            context: [("ticket".to_owned(), "T-1".to_owned())].into(),
            ..WorkflowInput::default()
        };
        let mut wf = Workflow::pending("a.b".into(), input, String::new());
        let mut call = StepRecord::new("call", StepOutcome::Succeeded, wf.created_at, 1, 1, String::new());
        call.output = Some(serde_json::json!({"status": 200, "body": {"id": "x/1", "items": [1, {"n": true}]}}));
        wf.steps.push(call);
        wf
    }

    #[test]
    fn values_are_escaped_for_where_they_go() {
        let wf = workflow();
        assert_eq!(render(r#"{"doc":"${input.content}"}"#, &wf, Target::Json).unwrap(), r#"{"doc":"say \"hi\"\nnow"}"#);
        let body: Value = serde_json::from_str(&render(r#"{"doc":"${input.content}"}"#, &wf, Target::Json).unwrap())
            .expect("a JSON body stays JSON");
        assert_eq!(body["doc"], "say \"hi\"\nnow");
        assert_eq!(render("http://h/${steps.call.output.body.id}", &wf, Target::Url).unwrap(), "http://h/x%2F1");
        assert_eq!(
            render("${input.context.ticket} ${workflow.id}", &wf, Target::Text).unwrap(),
            format!("T-1 {}", wf.id)
        );
        assert_eq!(render(r#"{"s":${steps.call.output.status}}"#, &wf, Target::Json).unwrap(), r#"{"s":200}"#);
        assert_eq!(render("${steps.call.output.body.items.1.n}", &wf, Target::Text).unwrap(), "true");
        assert_eq!(render("no templates", &wf, Target::Text).unwrap(), "no templates");
    }

    #[test]
    fn missing_values_say_what_is_missing() {
        let wf = workflow();
        let err = render("${steps.call.output.body.nope}", &wf, Target::Text).unwrap_err();
        assert!(err.contains("steps.call.output.body has no field \"nope\""), "{err}");
        assert!(render("${steps.later.output}", &wf, Target::Text).unwrap_err().contains("has no output"));
        assert!(render("${input.context.other}", &wf, Target::Text).unwrap_err().contains("context key"));
    }
}
