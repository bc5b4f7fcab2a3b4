//! The wire form of requests and answers: protobuf, or proto3 JSON when the
//! record's `content-type` header says `application/json` (answers are
//! written in the encoding of their request).

use std::sync::OnceLock;

use omninode_proto::ingress::v1 as pb;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

/// How a record's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// The encoding a `content-type` header names; `None` for one not understood.
    /// No header means protobuf.
    pub fn of_content_type(content_type: Option<&str>) -> Option<Self> {
        let Some(value) = content_type else { return Some(Self::Protobuf) };
        let media = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json" => Some(Self::Json),
            "" | "application/protobuf" | "application/x-protobuf" | "application/octet-stream" => Some(Self::Protobuf),
            _ => None,
        }
    }

    /// The `content-type` header of an answer in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

fn descriptor(name: &str) -> MessageDescriptor {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        DescriptorPool::decode(omninode_proto::FILE_DESCRIPTOR_SET).expect("the compiled descriptor set is valid")
    });
    pool.get_message_by_name(name).expect("the ingress messages are in the descriptor set")
}

/// Decodes a request, or says why it cannot be.
pub fn decode_request(payload: &[u8], encoding: Encoding) -> Result<pb::Request, String> {
    match encoding {
        Encoding::Protobuf => {
            pb::Request::decode(payload).map_err(|e| format!("not an omninode.ingress.v1.Request: {e}"))
        }
        Encoding::Json => {
            let mut deserializer = serde_json::Deserializer::from_slice(payload);
            let options = DeserializeOptions::new().deny_unknown_fields(true);
            let message = DynamicMessage::deserialize_with_options(
                descriptor("omninode.ingress.v1.Request"),
                &mut deserializer,
                &options,
            )
            .map_err(|e| format!("invalid JSON request: {e}"))?;
            deserializer.end().map_err(|e| format!("invalid JSON request: {e}"))?;
            message.transcode_to::<pb::Request>().map_err(|e| format!("invalid JSON request: {e}"))
        }
    }
}

/// Encodes an answer. In JSON, error details of a type this build does not
/// know (none of the mesh's own) are left out rather than failing the answer.
pub fn encode_response(response: &pb::Response, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => match to_json(response) {
            Ok(json) => json,
            Err(err) => {
                tracing::warn!(%err, "an answer's error details have no JSON form; sent without them");
                let mut plain = response.clone();
                if let Some(pb::response::Result::Error(status)) = &mut plain.result {
                    status.details.clear();
                }
                to_json(&plain).unwrap_or_else(|err| {
                    serde_json::json!({"eventId": response.event_id, "correlationId": response.correlation_id,
                        "error": {"code": 13, "message": format!("the answer has no JSON form: {err}")}})
                    .to_string()
                    .into_bytes()
                })
            }
        },
    }
}

fn to_json(response: &pb::Response) -> Result<Vec<u8>, String> {
    let mut message = DynamicMessage::new(descriptor("omninode.ingress.v1.Response"));
    message.transcode_from(response).map_err(|e| e.to_string())?;
    let options = SerializeOptions::new().skip_default_fields(false);
    let json = message.serialize_with_options(serde_json::value::Serializer, &options).map_err(|e| e.to_string())?;
    Ok(json.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use omninode_proto::stamping::v1::StampRequest;

    #[test]
    fn content_types_choose_the_encoding() {
        assert_eq!(Encoding::of_content_type(None), Some(Encoding::Protobuf));
        assert_eq!(Encoding::of_content_type(Some("application/json; charset=utf-8")), Some(Encoding::Json));
        assert_eq!(Encoding::of_content_type(Some("Application/X-Protobuf")), Some(Encoding::Protobuf));
        assert_eq!(Encoding::of_content_type(Some("text/plain")), None);
    }

    #[test]
    fn a_json_stamp_request_decodes_like_its_protobuf_form() {
        let json = br#"{"stamp":{"namespace":"a.b","content":"hello","idempotency_key":"k1"}}"#;
        let request = decode_request(json, Encoding::Json).unwrap();
        let expected = pb::Request {
            request: Some(pb::request::Request::Stamp(StampRequest {
                namespace: "a.b".into(),
                content: "hello".into(),
                idempotency_key: "k1".into(),
                ..Default::default()
            })),
        };
        assert_eq!(request, expected);
        assert_eq!(decode_request(&expected.encode_to_vec(), Encoding::Protobuf).unwrap(), expected);
    }

    #[test]
    fn malformed_requests_say_why() {
        assert!(decode_request(b"{\"stamp\":", Encoding::Json).unwrap_err().contains("invalid JSON"));
        assert!(decode_request(br#"{"stamp":{"nope":1}}"#, Encoding::Json).unwrap_err().contains("nope"));
        assert!(decode_request(b"\xff\xff\xff", Encoding::Protobuf).unwrap_err().contains("not an omninode"));
    }

    #[test]
    fn answers_in_json_use_the_proto3_json_names() {
        let response = pb::Response {
            event_id: "e1".into(),
            correlation_id: "c1".into(),
            kind: "stamp".into(),
            stage: pb::Stage::Done as i32,
            result: Some(pb::response::Result::Error(omninode_proto::google::rpc::Status {
                code: 3,
                message: "bad".into(),
                details: Vec::new(),
            })),
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&encode_response(&response, Encoding::Json)).unwrap();
        assert_eq!(json["correlationId"], "c1");
        // The mesh's own error details have a JSON form.
        let info = omninode_proto::google::rpc::ErrorInfo { reason: "NAMESPACE_INVALID".into(), ..Default::default() };
        let mut detailed = response.clone();
        if let Some(pb::response::Result::Error(status)) = &mut detailed.result {
            status.details.push(prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                value: info.encode_to_vec(),
            });
        }
        let json: serde_json::Value = serde_json::from_slice(&encode_response(&detailed, Encoding::Json)).unwrap();
        assert_eq!(json["error"]["details"][0]["reason"], "NAMESPACE_INVALID", "{json}");
        assert_eq!(json["stage"], "STAGE_DONE");
        assert_eq!(json["error"]["code"], 3);
        assert_eq!(pb::Response::decode(&*encode_response(&response, Encoding::Protobuf)).unwrap(), response);
    }
}
