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
    Ok(message)
}

fn from_json(desc: MessageDescriptor, body: &[u8], unknown: UnknownFields) -> Result<DynamicMessage, BadRequest> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let options = DeserializeOptions::new().deny_unknown_fields(unknown == UnknownFields::Reject);
    let message = DynamicMessage::deserialize_with_options(desc, &mut deserializer, &options)
        .map_err(|e| BadRequest(format!("invalid JSON body: {e}")))?;
    deserializer.end().map_err(|e| BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(message)
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
            None => Value::EnumNumber(text.parse().map_err(|_| bad(&format!("a {} value", e.name())))?),
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
    let options = SerializeOptions::new().skip_default_fields(false);
    let to_json = |m: &DynamicMessage| {
        m.serialize_with_options(serde_json::value::Serializer, &options).unwrap_or(serde_json::Value::Null)
    };
    if response_body.is_empty() {
        return to_json(message);
    }
    match message.get_field_by_name(response_body).as_deref() {
        Some(Value::Message(m)) => to_json(m),
        _ => to_json(message).get(response_body).cloned().unwrap_or(serde_json::Value::Null),
    }
}
