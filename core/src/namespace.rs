//! Namespaces: lowercase dotted segments, e.g. `omninode.bridge`.

/// The namespace used when a request leaves it empty.
pub const DEFAULT_NAMESPACE: &str = "omninode.bridge";

/// Longest accepted namespace.
pub const MAX_NAMESPACE_LEN: usize = 128;

/// The namespace a request names, or the default; `Err` says what is wrong.
pub fn resolve_namespace(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Ok(DEFAULT_NAMESPACE.to_owned());
    }
    if raw.len() > MAX_NAMESPACE_LEN {
        return Err(format!("namespace is {} characters long; the limit is {MAX_NAMESPACE_LEN}", raw.len()));
    }
    for segment in raw.split('.') {
        let mut chars = segment.chars();
        match chars.next() {
            None => return Err(format!("namespace {raw:?} has an empty segment")),
            Some(first) if !first.is_ascii_lowercase() => {
                return Err(format!("namespace {raw:?}: segment {segment:?} must start with a lowercase letter"));
            }
            _ => {}
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')) {
            return Err(format!(
                "namespace {raw:?}: {bad:?} is not allowed (use lowercase letters, digits, '_' or '-' in dot-separated segments)"
            ));
        }
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lowercase_dotted_segments() {
        assert_eq!(resolve_namespace("").unwrap(), DEFAULT_NAMESPACE);
        for ok in ["a", "omninode.bridge", "team-a.repo_2.v1"] {
            assert_eq!(resolve_namespace(ok).unwrap(), ok);
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        for (bad, says) in [
            ("Omninode", "lowercase letter"),
            ("a..b", "empty segment"),
            ("a.", "empty segment"),
            ("a.1b", "lowercase letter"),
            ("a b", "' '"),
            ("a/b", "'/'"),
        ] {
            let err = resolve_namespace(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(resolve_namespace(&"a".repeat(129)).unwrap_err().contains("limit"));
    }
}
