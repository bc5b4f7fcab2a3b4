//! HTTP request → protobuf request message, and protobuf → JSON, following
//! the grpc-gateway rules: path variables first, then the body (`*` = the
//! whole message, a field name = that field), then query parameters for the
//! fields neither bound (only when the body is not `*`). Proto3 JSON mapping
//! through prost-reflect: camelCase out, JSON and proto field names in.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
    Value,
};

use crate::rules::Route;

/// A request that cannot be turned into the RPC's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// What a JSON body's fields that the message does not have do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownFields {
    /// Ignored, so that older clients keep working as messages grow (grpc-gateway's default).
    #[default]
    Ignore,
    /// Refused with 400 naming the field (`GATEWAY_REJECT_UNKNOWN_FIELDS=true`).
    Reject,
}

/// Builds the RPC request from the matched `route`.
pub fn request_message(
    route: &Route,
    bindings: &[(String, String)],
    query: Option<&str>,
    body: &[u8],
    unknown: UnknownFields,
) -> Result<DynamicMessage, BadRequest> {
    let desc = route.method.input();
    let mut message = match route.body.as_str() {
        "" => DynamicMessage::new(desc.clone()),
        "*" if body.is_empty() => DynamicMessage::new(desc.clone()),
        "*" => from_json(desc.clone(), body, unknown)?,
        field => {
            let mut message = DynamicMessage::new(desc.clone());
            if !body.is_empty() {
                let fd = desc.get_field_by_name(field).ok_or_else(|| BadRequest(format!("no body field {field}")))?;
                let value = field_from_json(&fd, body, unknown)?;
                message.set_field(&fd, value);
            }
            message
        }
    };
    for (path, value) in bindings {
        set_path(&mut message, path, value, false)?;
    }
    if route.body != "*"
        && let Some(query) = query
    {
        let bound: Vec<&str> = bindings.iter().map(|(p, _)| p.as_str()).collect();
        for (key, value) in form_urlencoded(query) {
            if bound.contains(&key.as_str()) || key == route.body {
                continue;
            }
            set_path(&mut message, &key, &value, true)?;
        }
    }
    known_enums(&message)?;
    Ok(message)
}

/// Refuses enum numbers the contracts do not define (proto3 JSON takes any
/// number; a service would see a value it has no meaning for).
pub(crate) fn known_enums(message: &DynamicMessage) -> Result<(), BadRequest> {
    for (field, value) in message.fields() {
        let check = |value: &Value| match (field.kind(), value) {
            (Kind::Enum(e), Value::EnumNumber(n)) if e.get_value(*n).is_none() => {
                Err(BadRequest(format!("{}: {n} is not a {} value", field.name(), e.name())))
            }
            (_, Value::Message(child)) => known_enums(child),
            _ => Ok(()),
        };
        match value {
            Value::List(items) => items.iter().try_for_each(check)?,
            Value::Map(entries) => entries.values().try_for_each(check)?,
            other => check(other)?,
        }
    }
    Ok(())
}

fn from_json(desc: MessageDescriptor, body: &[u8], unknown: UnknownFields) -> Result<DynamicMessage, BadRequest> {
    let parse = |deny_unknown: bool| {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let options = DeserializeOptions::new().deny_unknown_fields(deny_unknown);
        let message = DynamicMessage::deserialize_with_options(desc.clone(), &mut deserializer, &options)
            .map_err(|e| BadRequest(format!("invalid JSON body: {e}")))?;
        deserializer.end().map_err(|e| BadRequest(format!("invalid JSON body: {e}")))?;
        Ok(message)
    };
    // Strict first: it also refuses enum names the contracts do not have.
    // Only a body with fields this message lacks is read again, leniently,
    // and then its enum names are checked on their own (an unknown one would
    // otherwise become the zero value without a word).
    match parse(true) {
        Ok(message) => Ok(message),
        Err(strict) if unknown == UnknownFields::Reject => Err(strict),
        Err(_) => {
            let message = parse(false)?;
            let json: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| BadRequest(format!("invalid JSON body: {e}")))?;
            known_enum_names(&desc, &json)?;
            Ok(message)
        }
    }
}

/// Every enum value written by name in `json` (read as `desc`) is one the contracts define.
fn known_enum_names(desc: &MessageDescriptor, json: &serde_json::Value) -> Result<(), BadRequest> {
    let Some(object) = json.as_object() else { return Ok(()) };
    for (key, value) in object {
        let Some(field) = desc.get_field_by_json_name(key).or_else(|| desc.get_field_by_name(key)) else { continue };
        let values: Vec<&serde_json::Value> = match value {
            serde_json::Value::Array(items) if field.is_list() => items.iter().collect(),
            serde_json::Value::Object(entries) if field.is_map() => entries.values().collect(),
            other => vec![other],
        };
        let kind = if field.is_map() {
            match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other,
            }
        } else {
            field.kind()
        };
        for value in values {
            match (&kind, value) {
                (Kind::Enum(e), serde_json::Value::String(name)) if e.get_value_by_name(name).is_none() => {
                    return Err(BadRequest(format!("{}: {name:?} is not a {} value", field.name(), e.name())));
                }
                (Kind::Message(child), child_json) => known_enum_names(child, child_json)?,
                _ => {}
            }
        }
    }
    Ok(())
}

fn field_from_json(fd: &FieldDescriptor, body: &[u8], unknown: UnknownFields) -> Result<Value, BadRequest> {
    match fd.kind() {
        Kind::Message(desc) if !fd.is_list() && !fd.is_map() => Ok(Value::Message(from_json(desc, body, unknown)?)),
        _ => Err(BadRequest(format!("body field {} must be a message", fd.name()))),
    }
}

/// Sets `path` (dotted field names, JSON or proto spelling) from text.
pub(crate) fn set_path(message: &mut DynamicMessage, path: &str, text: &str, append: bool) -> Result<(), BadRequest> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let desc = message.descriptor();
    let fd = desc
        .get_field_by_name(head)
        .or_else(|| desc.get_field_by_json_name(head))
        .ok_or_else(|| BadRequest(format!("{} has no field {head:?}", desc.name())))?;
    if let Some(rest) = rest {
        let Kind::Message(_) = fd.kind() else { return Err(BadRequest(format!("{head} is not a message"))) };
        let Value::Message(child) = message.get_field_mut(&fd) else { unreachable!("a message field") };
        return set_path(child, rest, text, append);
    }
    let value = scalar(&fd, text)?;
    if fd.is_list() {
        if let Value::List(list) = message.get_field_mut(&fd) {
            if !append {
                list.clear();
            }
            list.push(value);
        }
    } else {
        message.set_field(&fd, value);
    }
    Ok(())
}

fn scalar(fd: &FieldDescriptor, text: &str) -> Result<Value, BadRequest> {
    let bad = |what: &str| BadRequest(format!("{}: {text:?} is not {what}", fd.name()));
    Ok(match fd.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => Value::Bool(text.parse().map_err(|_| bad("a boolean"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(text.parse().map_err(|_| bad("an integer"))?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(text.parse().map_err(|_| bad("an integer"))?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| bad("an unsigned integer"))?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| bad("an unsigned integer"))?),
        Kind::Float => Value::F32(text.parse().map_err(|_| bad("a number"))?),
        Kind::Double => Value::F64(text.parse().map_err(|_| bad("a number"))?),
        Kind::Bytes => Value::Bytes(text.as_bytes().to_vec().into()),
        Kind::Enum(e) => match e.get_value_by_name(text) {
            Some(v) => Value::EnumNumber(v.number()),
            None => text
                .parse()
                .ok()
                .and_then(|n| e.get_value(n))
                .map(|v| Value::EnumNumber(v.number()))
                .ok_or_else(|| bad(&format!("a {} value", e.name())))?,
        },
        Kind::Message(_) => return Err(bad("settable from a query parameter")),
    })
}

/// The decoded `name=value` pairs of a query string (`+` is a space).
pub(crate) fn form_urlencoded(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

/// The JSON of a response message (or of its `response_body` field), every
/// field written, default values included (`"created": false`, zero counts,
/// enum zero values), as grpc-gateway does by default.
pub fn response_json(message: &DynamicMessage, response_body: &str) -> serde_json::Value {
    let to_json = |m: &DynamicMessage| {
        m.serialize_with_options(serde_json::value::Serializer, &json_options()).unwrap_or(serde_json::Value::Null)
    };
    if response_body.is_empty() {
        return to_json(message);
    }
    match message.get_field_by_name(response_body).as_deref() {
        Some(Value::Message(m)) => to_json(m),
        _ => to_json(message).get(response_body).cloned().unwrap_or(serde_json::Value::Null),
    }
}

/// [`response_json`] written straight out as bytes, without building the
/// JSON tree first (a response body is written once and sent).
pub fn response_json_bytes(message: &DynamicMessage, response_body: &str) -> Vec<u8> {
    let write = |m: &DynamicMessage| {
        let mut out = Vec::with_capacity(256);
        match m.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &json_options()) {
            Ok(()) => out,
            Err(_) => b"null".to_vec(),
        }
    };
    if response_body.is_empty() {
        return write(message);
    }
    match message.get_field_by_name(response_body).as_deref() {
        Some(Value::Message(m)) => write(m),
        _ => serde_json::to_vec(&response_json(message, response_body)).unwrap_or_else(|_| b"null".to_vec()),
    }
}

fn json_options() -> SerializeOptions {
    SerializeOptions::new().skip_default_fields(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp_response() -> DynamicMessage {
        let pool = crate::rules::descriptor_pool();
        let desc = pool.get_message_by_name("omninode.stamping.v1.StampResponse").expect("in the contracts");
        let json = r#"{"stamp":{"namespace":"ns","fileHash":"ab"},"stampedContent":"x\n\"quoted\" é","created":false}"#;
        from_json(desc, json.as_bytes(), UnknownFields::Reject).expect("a valid message")
    }

    #[test]
    fn response_bytes_are_the_json_tree_written_out() {
        let message = stamp_response();
        for body in ["", "stamp", "stamped_content", "created"] {
            let bytes = response_json_bytes(&message, body);
            let tree: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
            assert_eq!(tree, response_json(&message, body), "response_body {body:?}");
        }
        // Default values are written, as grpc-gateway does.
        let whole: serde_json::Value = serde_json::from_slice(&response_json_bytes(&message, "")).unwrap();
        assert_eq!(whole["created"], serde_json::Value::Bool(false));
        assert_eq!(whole["stampText"], serde_json::Value::String(String::new()));
        assert_eq!(whole["stamp"]["namespace"], "ns");
    }
}
