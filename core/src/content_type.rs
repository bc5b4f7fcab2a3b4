//! Content types derived from a file's extension when the caller gives none.

/// The content type of `file_path` by its extension; `text/plain` otherwise.
pub fn content_type_for(file_path: &str) -> &'static str {
    let name = file_path.rsplit(['/', '\\']).next().unwrap_or_default();
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => return "text/plain",
    };
    match ext.as_str() {
        "py" => "text/x-python",
        "rs" => "text/x-rust",
        "go" => "text/x-go",
        "java" => "text/x-java",
        "c" | "h" => "text/x-c",
        "cc" | "cpp" | "hpp" => "text/x-c++",
        "js" | "mjs" => "text/javascript",
        "ts" => "text/x-typescript",
        "sh" | "bash" => "text/x-shellscript",
        "md" | "markdown" => "text/markdown",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "json" => "application/json",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "xml" => "application/xml",
        "csv" => "text/csv",
        "sql" => "application/sql",
        "proto" => "text/x-protobuf",
        _ => "text/plain",
    }
}

#[cfg(test)]
mod tests {
    use super::content_type_for;

    #[test]
    fn by_extension_case_insensitive() {
        assert_eq!(content_type_for("src/main.PY"), "text/x-python");
        assert_eq!(content_type_for("docs/README.md"), "text/markdown");
        assert_eq!(content_type_for(".bashrc"), "text/plain");
        assert_eq!(content_type_for("Makefile"), "text/plain");
        assert_eq!(content_type_for("a.dir/file"), "text/plain");
    }
}
