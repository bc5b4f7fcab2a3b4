//! Files in and out of the routes that take them (`omninode.api.v1.http_raw_content`):
//! a raw body (`application/octet-stream`, `text/*`) or a `multipart/form-data`
//! upload becomes the request message, and a client that asks for raw
//! content gets the response's file field as the body, the rest in headers.

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage, Value,
};

use crate::{
    rules::{RawContent, Route},
    transcode::{BadRequest, form_urlencoded, set_path},
};

/// Request headers that set request fields: `Omninode-File-Path: a/b.py`
/// sets `file_path` (the value percent-decoded, for non-ASCII paths).
const FIELD_HEADER_PREFIX: &str = "omninode-";

/// What a request body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// JSON, or no declared type (taken as JSON).
    Json,
    /// A file as the body: `application/octet-stream` or `text/*` (the essence).
    Raw(String),
    /// `multipart/form-data` with this boundary.
    Multipart(String),
    /// Anything else (the essence).
    Other(String),
}

/// The media of the request body.
pub fn media(headers: &HeaderMap) -> Media {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Media::Json;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        Media::Json
    } else if essence == "application/octet-stream" || essence.starts_with("text/") {
        Media::Raw(essence)
    } else if essence == "multipart/form-data" {
        match multer::parse_boundary(content_type) {
            Ok(boundary) => Media::Multipart(boundary),
            Err(_) => Media::Other(essence),
        }
    } else {
        Media::Other(essence)
    }
}

/// Whether the client asks for the file itself rather than JSON: its
/// `Accept` names `application/octet-stream` or a `text/*` type and no JSON.
pub fn wants_raw(headers: &HeaderMap) -> bool {
    let accept = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let types: Vec<String> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    !types.iter().any(|t| t.contains("json"))
        && types.iter().any(|t| t == "application/octet-stream" || t.starts_with("text/"))
}

/// The origin of a cross-site page that sent a body without a CORS
/// preflight (a form or `text/plain` post), when that origin is not allowed:
/// such bodies are taken only from same-origin pages, allowed origins and
/// clients that are not browsers (no `Origin`).
pub fn cross_site_origin(headers: &HeaderMap, allowed: Option<&[String]>) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("null").to_owned();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let same_origin = origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
    let listed = allowed.is_some_and(|list| list.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(&origin)));
    (!same_origin && !listed).then_some(origin)
}

/// The request of a raw body: `bytes` in the route's file field, the other
/// fields from the path, the query and `Omninode-*` headers.
pub fn single(
    route: &Route,
    raw: &RawContent,
    bindings: &[(String, String)],
    query: Option<&str>,
    headers: &HeaderMap,
    essence: &str,
    bytes: Bytes,
) -> Result<DynamicMessage, BadRequest> {
    let mut message = DynamicMessage::new(route.method.input());
    set_file(&mut message, &raw.request_field, bytes, "the body")?;
    let file_type = (essence != "application/octet-stream").then_some(essence);
    fill(&mut message, bindings, query, headers, &[], raw)?;
    default_field(&mut message, "content_type", file_type);
    crate::transcode::known_enums(&message)?;
    Ok(message)
}

/// One file of a multipart upload.
struct Part {
    file_name: String,
    content_type: Option<String>,
    bytes: Bytes,
}

/// The request of a `multipart/form-data` body: one file fills the route's
/// file field (its name the `file_path`, its type the `content_type`, unless
/// given); several go to the batch RPC, one item each. Parts without a file
/// name are fields, like query parameters. Returns the method to call.
pub async fn multipart(
    route: &Route,
    raw: &RawContent,
    bindings: &[(String, String)],
    query: Option<&str>,
    headers: &HeaderMap,
    boundary: String,
    body: Bytes,
) -> Result<(MethodDescriptor, DynamicMessage), BadRequest> {
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut reader = multer::Multipart::new(stream, boundary);
    let (mut files, mut fields) = (Vec::new(), Vec::new());
    let malformed = |e: multer::Error| BadRequest(format!("the multipart body is malformed: {e}"));
    while let Some(part) = reader.next_field().await.map_err(malformed)? {
        let name = part.name().unwrap_or_default().to_owned();
        let file_name = part.file_name().map(str::to_owned);
        let content_type = part.content_type().map(|m| m.essence_str().to_owned());
        let bytes = part.bytes().await.map_err(malformed)?;
        // A part with a filename is a file, and so is a part named `file` without one.
        match file_name {
            Some(file_name) => files.push(Part { file_name, content_type, bytes }),
            None if name == "file" => files.push(Part { file_name: String::new(), content_type, bytes }),
            None => fields.push((name, String::from_utf8_lossy(&bytes).into_owned())),
        }
    }
    let file_type = |part: &Part| part.content_type.clone().filter(|t| t != "application/octet-stream");
    match files.len() {
        0 => Err(BadRequest("the multipart body has no file (a part with a filename, or named file)".into())),
        1 => {
            let part = files.pop().expect("one file");
            let mut message = DynamicMessage::new(route.method.input());
            set_file(&mut message, &raw.request_field, part.bytes.clone(), &format!("file {:?}", part.file_name))?;
            fill(&mut message, bindings, query, headers, &fields, raw)?;
            default_field(&mut message, "file_path", Some(part.file_name.as_str()).filter(|n| !n.is_empty()));
            default_field(&mut message, "content_type", file_type(&part).as_deref());
            crate::transcode::known_enums(&message)?;
            Ok((route.method.clone(), message))
        }
        count => {
            let Some(batch) = &raw.batch else {
                return Err(BadRequest(format!("{} takes one file; the body has {count}", route.method.name())));
            };
            let mut message = DynamicMessage::new(batch.input());
            fill(&mut message, bindings, query, headers, &fields, raw)?;
            let items_field = batch
                .input()
                .get_field_by_name("items")
                .ok_or_else(|| BadRequest(format!("{} has no items", batch.name())))?;
            let Kind::Message(item) = items_field.kind() else { unreachable!("items are messages") };
            let items = files
                .into_iter()
                .map(|part| {
                    let mut entry = DynamicMessage::new(item.clone());
                    let file = item_field(&item, raw.request_field.name())?;
                    set_file(&mut entry, &file, part.bytes.clone(), &format!("file {:?}", part.file_name))?;
                    default_field(&mut entry, "file_path", Some(&part.file_name));
                    default_field(&mut entry, "content_type", file_type(&part).as_deref());
                    Ok(Value::Message(entry))
                })
                .collect::<Result<Vec<_>, BadRequest>>()?;
            message.set_field(&items_field, Value::List(items));
            crate::transcode::known_enums(&message)?;
            Ok((batch.clone(), message))
        }
    }
}

fn item_field(item: &MessageDescriptor, name: &str) -> Result<FieldDescriptor, BadRequest> {
    item.get_field_by_name(name).ok_or_else(|| BadRequest(format!("{} has no field {name}", item.name())))
}

/// Sets the file field: bytes as they are, or UTF-8 text for a string field.
fn set_file(message: &mut DynamicMessage, field: &FieldDescriptor, bytes: Bytes, what: &str) -> Result<(), BadRequest> {
    let value = match field.kind() {
        Kind::Bytes => Value::Bytes(bytes),
        Kind::String => Value::String(
            String::from_utf8(bytes.to_vec())
                .map_err(|e| BadRequest(format!("{} must be UTF-8 text: {what} is not ({e})", field.name())))?,
        ),
        _ => return Err(BadRequest(format!("{} cannot take a file", field.name()))),
    };
    message.set_field(field, value);
    Ok(())
}

/// Path bindings, then multipart fields, query parameters and `Omninode-*` headers.
fn fill(
    message: &mut DynamicMessage,
    bindings: &[(String, String)],
    query: Option<&str>,
    headers: &HeaderMap,
    form: &[(String, String)],
    raw: &RawContent,
) -> Result<(), BadRequest> {
    let from_headers = headers.iter().filter_map(|(name, value)| {
        let field = name.as_str().strip_prefix(FIELD_HEADER_PREFIX)?.replace('-', "_");
        let value = percent_encoding::percent_decode(value.as_bytes()).decode_utf8_lossy().into_owned();
        Some((field, value))
    });
    let query = query.map(form_urlencoded).unwrap_or_default();
    let bound: Vec<&str> = bindings.iter().map(|(path, _)| path.as_str()).collect();
    for (path, value) in bindings {
        set_path(message, path, value, false)?;
    }
    let mut seen = std::collections::HashSet::new();
    for (key, value) in form.iter().cloned().chain(query).chain(from_headers) {
        if bound.contains(&key.as_str()) || key == raw.request_field.name() {
            continue;
        }
        // A repeated field takes every value; any other the first given.
        let repeated = message.descriptor().get_field_by_name(&key).is_some_and(|f| f.is_list());
        if repeated || seen.insert(key.clone()) {
            set_path(message, &key, &value, true)?;
        }
    }
    Ok(())
}

/// Sets a string field the caller left empty, when the message has it.
fn default_field(message: &mut DynamicMessage, name: &str, value: Option<&str>) {
    let (Some(field), Some(value)) = (message.descriptor().get_field_by_name(name), value) else { return };
    let empty = matches!(message.get_field(&field).as_ref(), Value::String(s) if s.is_empty());
    if empty && field.kind() == Kind::String && !field.is_list() {
        message.set_field(&field, Value::String(value.to_owned()));
    }
}

/// The answer as a file: `field` as the body, every other scalar of the
/// answer (nested ones by their own names) in an `Omninode-<Field-Name>`
/// header, percent-encoded where it is not printable ASCII.
pub fn response(status: StatusCode, answer: &DynamicMessage, field: &FieldDescriptor, file_type: &str) -> Response {
    let (body, content_type) = match answer.get_field(field).as_ref() {
        Value::Bytes(bytes) => (bytes.clone(), "application/octet-stream".to_owned()),
        Value::String(text) => (Bytes::from(text.clone().into_bytes()), format!("{file_type}; charset=utf-8")),
        other => (Bytes::from(format!("{other:?}")), "text/plain; charset=utf-8".to_owned()),
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).expect("a media type"));
    let mut fields = Vec::new();
    scalars(answer, field, &mut fields);
    for (name, value) in fields {
        let name = format!("{FIELD_HEADER_PREFIX}{}", name.replace('_', "-"));
        let value = percent_encoding::utf8_percent_encode(&value, HEADER_UNSAFE).to_string();
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            headers.insert(name, value);
        }
    }
    response
}

/// What is percent-encoded in a header value: controls, non-ASCII and `%`.
const HEADER_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

fn scalars(message: &DynamicMessage, skip: &FieldDescriptor, out: &mut Vec<(String, String)>) {
    for field in message.descriptor().fields() {
        if field == *skip || field.is_list() || field.is_map() || field.containing_oneof().is_some() {
            continue;
        }
        let value = message.get_field(&field);
        let text = match value.as_ref() {
            // An unset message field (a record not returned) has no headers.
            Value::Message(_) if !message.has_field(&field) => None,
            Value::Message(child) => match child.descriptor().full_name() {
                "google.protobuf.Timestamp" => crate::transcode::response_json(child, "").as_str().map(str::to_owned),
                _ => {
                    scalars(child, skip, out);
                    None
                }
            },
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::EnumNumber(n) => match field.kind() {
                Kind::Enum(e) => e.get_value(*n).map(|v| v.name().to_owned()),
                _ => None,
            },
            Value::I32(n) => Some(n.to_string()),
            Value::I64(n) => Some(n.to_string()),
            Value::U32(n) => Some(n.to_string()),
            Value::U64(n) => Some(n.to_string()),
            Value::F32(n) => Some(n.to_string()),
            Value::F64(n) => Some(n.to_string()),
            _ => None,
        };
        if let Some(text) = text {
            out.push((field.name().to_owned(), text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn media_types_and_accept() {
        assert_eq!(media(&headers(&[])), Media::Json);
        assert_eq!(
            media(&headers(&[("content-type", "text/x-python; charset=utf-8")])),
            Media::Raw("text/x-python".into())
        );
        assert_eq!(
            media(&headers(&[("content-type", "multipart/form-data; boundary=xyz")])),
            Media::Multipart("xyz".into())
        );
        assert!(matches!(media(&headers(&[("content-type", "application/x-www-form-urlencoded")])), Media::Other(_)));
        assert!(wants_raw(&headers(&[("accept", "application/octet-stream")])));
        assert!(wants_raw(&headers(&[("accept", "text/plain;q=0.9")])));
        assert!(!wants_raw(&headers(&[("accept", "application/json, text/plain")])));
        assert!(!wants_raw(&headers(&[("accept", "*/*")])));
    }

    #[test]
    fn bodies_from_other_sites_need_an_allowed_origin() {
        let same = headers(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")]);
        assert_eq!(cross_site_origin(&same, None), None);
        let foreign = headers(&[("origin", "https://evil.example"), ("host", "127.0.0.1:8080")]);
        assert_eq!(cross_site_origin(&foreign, None).as_deref(), Some("https://evil.example"));
        assert_eq!(cross_site_origin(&foreign, Some(&["https://evil.example".to_owned()])), None);
        assert_eq!(cross_site_origin(&headers(&[("host", "x")]), None), None, "not a browser");
    }
}
