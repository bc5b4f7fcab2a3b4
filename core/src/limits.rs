//! What a request may carry. Every service checks input with these rules, so
//! a workflow is refused for exactly what a Stamp would be refused for.

/// Default of `STAMPING_MAX_CONTENT_BYTES`: the largest content accepted.
pub const DEFAULT_MAX_CONTENT_BYTES: usize = 16 * 1024 * 1024;
/// Longest file path.
pub const MAX_FILE_PATH: usize = 4096;
/// Longest short text field (content type, idempotency key, correlation id).
pub const MAX_FIELD: usize = 255;
/// Longest stamp version.
pub const MAX_VERSION: usize = 64;

/// Refuses content over `max` bytes.
pub fn check_content_size(len: usize, max: usize) -> Result<(), String> {
    if len > max {
        return Err(format!("content is {len} bytes; the limit is {max} (STAMPING_MAX_CONTENT_BYTES)"));
    }
    Ok(())
}

/// Refuses a text field over `max` bytes or with control characters.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{field} is {} bytes; the limit is {max}", value.len()));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain line breaks or control characters"));
    }
    Ok(())
}

/// Longest free-text field that is stored (a cancel reason, a context value).
pub const MAX_NOTE: usize = 4096;
/// Most entries in a workflow's context.
pub const MAX_CONTEXT_ENTRIES: usize = 64;

/// Refuses a NUL character: PostgreSQL text cannot hold it, and both
/// backends must refuse the same input the same way.
pub fn check_no_nul(field: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!("{field} must not contain NUL (U+0000) characters"));
    }
    Ok(())
}

/// Refuses free text (line breaks allowed) over `max` bytes or with NUL.
pub fn check_note(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{field} is {} bytes; the limit is {max}", value.len()));
    }
    check_no_nul(field, value)
}

/// The fields of content to be stamped, as every service checks them:
/// size, file path (it is written into a rich stamp's comment) and content type.
pub fn check_stampable(content: &str, file_path: &str, content_type: &str, max_content: usize) -> Result<(), String> {
    check_content_size(content.len(), max_content)?;
    check_no_nul("content", content)?;
    check_text("file_path", file_path, MAX_FILE_PATH)?;
    if file_path.contains("-->") {
        return Err("file_path must not contain \"-->\"".into());
    }
    check_text("content_type", content_type, MAX_FIELD)
}

/// A stamp version: 1 to [`MAX_VERSION`] letters, digits, '.', '_', '+' or '-'.
pub fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty()
        || version.len() > MAX_VERSION
        || !version.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
    {
        return Err(format!(
            "version {:?} must be 1 to {MAX_VERSION} characters of letters, digits, '.', '_', '+' or '-'",
            prefix(version, MAX_VERSION)
        ));
    }
    Ok(())
}

/// At most `max` characters of `s`, for messages that quote input.
pub fn prefix(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_refuse_control_characters_and_length() {
        assert!(check_text("file_path", "a\nb", 10).is_err());
        assert!(check_text("file_path", "abc", 2).unwrap_err().contains("limit is 2"));
        assert!(check_text("file_path", "ok/path.rs", 100).is_ok());
    }

    #[test]
    fn stampable_input_is_checked_field_by_field() {
        assert!(check_stampable("x", "a.md", "", 10).is_ok());
        assert!(check_stampable("too long", "a.md", "", 3).unwrap_err().contains("STAMPING_MAX_CONTENT_BYTES"));
        assert!(check_stampable("x", "a-->b", "", 10).unwrap_err().contains("-->"));
        assert!(check_stampable("x", "a", &"t".repeat(256), 10).unwrap_err().contains("content_type"));
        assert!(check_stampable("a\0b", "a", "", 10).unwrap_err().contains("NUL"));
        assert!(check_stampable("x", "a\0", "", 10).unwrap_err().contains("file_path"));
    }

    #[test]
    fn notes_allow_line_breaks_but_not_nul_or_length() {
        assert!(check_note("reason", "line one\nline two", 100).is_ok());
        assert!(check_note("reason", "a\0", 100).unwrap_err().contains("NUL"));
        assert!(check_note("reason", "abc", 2).unwrap_err().contains("limit is 2"));
    }

    #[test]
    fn versions_and_prefixes() {
        assert!(check_version("1.2.3-rc+4").is_ok());
        assert!(check_version("").is_err() && check_version("a b").is_err() && check_version(&"1".repeat(65)).is_err());
        assert_eq!(prefix("héllo", 2), "hé");
        assert_eq!(prefix("ab", 5), "ab");
    }
}
