//! `google.api.http` path templates: `/v1/namespaces/{namespace}/stamps:batch`.
//!
//! Segments are literals, `*` (one segment), `**` (the rest) or variables
//! `{field.path}` / `{field.path=pattern}`; a `:verb` may end the template.

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// A variable bound to `field`, covering `width` segments (`None`: the rest).
    Variable {
        field: String,
        width: Option<usize>,
    },
    /// `*` without a variable.
    Any,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pub raw: String,
    segments: Vec<Segment>,
    verb: Option<String>,
}

/// Why a template could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad path template {template:?}: {problem}")]
pub struct TemplateError {
    pub template: String,
    pub problem: String,
}

impl PathTemplate {
    pub fn parse(raw: &str) -> Result<Self, TemplateError> {
        let error = |problem: &str| TemplateError { template: raw.to_owned(), problem: problem.to_owned() };
        let path = raw.strip_prefix('/').ok_or_else(|| error("must start with '/'"))?;
        // The verb follows the last ':' that is outside braces.
        let (path, verb) = match path.rfind(':') {
            Some(i) if !path[i..].contains('}') => (&path[..i], Some(path[i + 1..].to_owned())),
            _ => (path, None),
        };
        let mut segments = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.find('}').ok_or_else(|| error("unclosed '{'"))?;
                let (field, pattern) = match inner[..end].split_once('=') {
                    Some((f, p)) => (f, p),
                    None => (&inner[..end], "*"),
                };
                let width = if pattern.ends_with("**") { None } else { Some(pattern.split('/').count()) };
                segments.push(Segment::Variable { field: field.to_owned(), width });
                rest = inner[end + 1..].strip_prefix('/').unwrap_or(&inner[end + 1..]);
            } else {
                let (segment, next) = rest.split_once('/').unwrap_or((rest, ""));
                segments.push(match segment {
                    "*" => Segment::Any,
                    "" => return Err(error("empty segment")),
                    literal => Segment::Literal(literal.to_owned()),
                });
                rest = next;
            }
        }
        Ok(Self { raw: raw.to_owned(), segments, verb })
    }

    /// The variable bindings when `path` (percent-decoded per segment by the
    /// caller) matches.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        self.matches_split(&SplitPath::new(path)?)
    }

    /// [`Self::matches`] for a path split once for every template tried.
    pub fn matches_split(&self, path: &SplitPath<'_>) -> Option<Vec<(String, String)>> {
        // A last segment with a ':' names a custom method, which only a template with that verb serves.
        if path.verb != self.verb.as_deref() {
            return None;
        }
        let parts = &path.parts;
        let mut bindings = Vec::new();
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(i) != Some(&literal.as_str()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Any => {
                    parts.get(i).filter(|p| !p.is_empty())?;
                    i += 1;
                }
                Segment::Variable { field, width } => {
                    let width = width.unwrap_or(parts.len().saturating_sub(i));
                    if width == 0 || i + width > parts.len() || parts[i..i + width].iter().any(|p| p.is_empty()) {
                        return None;
                    }
                    let value = parts[i..i + width].iter().map(|p| decode(p)).collect::<Vec<_>>().join("/");
                    bindings.push((field.clone(), value));
                    i += width;
                }
            }
        }
        (i == parts.len()).then_some(bindings)
    }

    /// Field paths bound by the template's variables.
    pub fn variables(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Variable { field, .. } => Some(field.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The template in OpenAPI form: `/v1/namespaces/{namespace}/stamps:batch`.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Any => out.push('*'),
                Segment::Variable { field, .. } => {
                    out.push('{');
                    out.push_str(field);
                    out.push('}');
                }
            }
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }

    /// Literal segments count: more specific routes are tried first.
    pub fn specificity(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count() + usize::from(self.verb.is_some())
    }
}

/// A request path split into segments and its `:verb`, once, for matching
/// against every template.
#[derive(Debug)]
pub struct SplitPath<'a> {
    parts: Vec<&'a str>,
    verb: Option<&'a str>,
}

impl<'a> SplitPath<'a> {
    /// `None` when `path` does not start with '/'.
    pub fn new(path: &'a str) -> Option<Self> {
        let path = path.strip_prefix('/')?;
        let (path, verb) = match path.rsplit_once(':') {
            Some((p, v)) if !v.contains('/') => (p, Some(v)),
            _ => (path, None),
        };
        let parts = if path.is_empty() { Vec::new() } else { path.split('/').collect() };
        Some(Self { parts, verb })
    }
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_literals_and_verbs() {
        let t = PathTemplate::parse("/v1/namespaces/{namespace}/stamps/{file_hash}").unwrap();
        assert_eq!(
            t.matches("/v1/namespaces/a.b/stamps/ff"),
            Some(vec![("namespace".into(), "a.b".into()), ("file_hash".into(), "ff".into())])
        );
        assert_eq!(t.matches("/v1/namespaces/a.b/stamps"), None);
        let batch = PathTemplate::parse("/v1/namespaces/{namespace}/stamps:batch").unwrap();
        assert_eq!(batch.matches("/v1/namespaces/x/stamps:batch"), Some(vec![("namespace".into(), "x".into())]));
        assert_eq!(batch.matches("/v1/namespaces/x/stamps"), None);
        let list = PathTemplate::parse("/v1/namespaces/{namespace}/stamps").unwrap();
        assert_eq!(list.matches("/v1/namespaces/x/stamps:batch"), None, "a verb is not a literal");
        assert_eq!(batch.openapi_path(), "/v1/namespaces/{namespace}/stamps:batch");
        assert!(batch.specificity() > list.specificity());
    }

    #[test]
    fn patterns_and_percent_decoding() {
        let t = PathTemplate::parse("/v1/{name=files/**}").unwrap();
        assert_eq!(t.matches("/v1/files/a/b%20c"), Some(vec![("name".into(), "files/a/b c".into())]));
        let t = PathTemplate::parse("/v1/{a.b=x/*}/y").unwrap();
        assert_eq!(t.matches("/v1/x/1/y"), Some(vec![("a.b".into(), "x/1".into())]));
        assert!(PathTemplate::parse("v1/x").is_err());
        assert!(PathTemplate::parse("/v1/{x").is_err());
    }
}
