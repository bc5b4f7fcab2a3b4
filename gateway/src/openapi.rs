//! The OpenAPI 3.1 document of the gateway, generated from the same
//! descriptors and annotations that drive the routes.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::rules::Route;

/// The document for `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    for route in routes {
        let method = &route.method;
        let input = method.input();
        let bound: Vec<&str> = route.template.variables();
        let mut parameters: Vec<Value> = bound
            .iter()
            .map(|path| {
                let schema =
                    field_at(&input, path).map(|f| field_schema(&f, &mut schemas)).unwrap_or(json!({"type": "string"}));
                json!({"name": path, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        if route.body != "*" {
            for field in input.fields() {
                let top_bound = bound.iter().any(|b| b.split('.').next() == Some(field.name()));
                if top_bound || field.name() == route.body || matches!(field.kind(), Kind::Message(_)) {
                    continue;
                }
                let schema = field_schema(&field, &mut schemas);
                parameters.push(json!({"name": field.json_name(), "in": "query", "required": false, "schema": schema}));
            }
        }
        let success = route.success_status.to_string();
        let output = reference(&method.output(), &mut schemas);
        let content = if method.is_server_streaming() {
            json!({"text/event-stream": {"schema": {"type": "string", "description": format!("Server-Sent Events; each `data:` is a {} in JSON", method.output().name())}}})
        } else {
            json!({"application/json": {"schema": output}})
        };
        let mut operation = json!({
            "operationId": format!("{}_{}", method.parent_service().name(), method.name()),
            "tags": [method.parent_service().name()],
            "summary": format!("{} ({})", method.name(), method.full_name()),
            "parameters": parameters,
            "responses": {
                success: {"description": "OK", "content": content},
                "default": {"description": "An error (google.rpc.Status)",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}},
            },
        });
        match route.body.as_str() {
            "" => {}
            "*" => {
                operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": reference(&input, &mut schemas)}}});
            }
            field => {
                if let Some(Kind::Message(desc)) = input.get_field_by_name(field).map(|f| f.kind()) {
                    operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": reference(&desc, &mut schemas)}}});
                }
            }
        }
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.http_method.as_str().to_ascii_lowercase(), operation);
    }
    schemas.insert(
        "google.rpc.Status".to_owned(),
        json!({"type": "object", "properties": {
            "code": {"type": "integer", "format": "int32"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        }}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "OmniNode Bridge REST API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "HTTP/JSON for the OmniNode Bridge gRPC services, generated from their google.api.http annotations."},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn field_at(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let (head, rest) = path.split_once('.').map_or((path, None), |(h, r)| (h, Some(r)));
    let field = message.get_field_by_name(head)?;
    match (rest, field.kind()) {
        (None, _) => Some(field),
        (Some(rest), Kind::Message(child)) => field_at(&child, rest),
        _ => None,
    }
}

fn reference(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    let name = message.full_name().to_owned();
    // Well-known types have their own JSON forms.
    match message.full_name() {
        "google.protobuf.Timestamp" => return json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Value" => return json!({"description": "any JSON value"}),
        "google.protobuf.Struct" => return json!({"type": "object"}),
        "google.protobuf.ListValue" => return json!({"type": "array"}),
        _ => {}
    }
    if !schemas.contains_key(&name) {
        schemas.insert(name.clone(), Value::Null); // placeholder: recursion stops here
        let properties: Map<String, Value> =
            message.fields().map(|f| (f.json_name().to_owned(), field_schema(&f, schemas))).collect();
        schemas.insert(name.clone(), json!({"type": "object", "properties": properties}));
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else { unreachable!("a map entry") };
        let value = entry.map_entry_value_field();
        return json!({"type": "object", "additionalProperties": field_schema(&value, schemas)});
    }
    let single = match field.kind() {
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        // proto3 JSON writes 64-bit integers as strings.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Float | Kind::Double => json!({"type": "number"}),
        Kind::Enum(e) => json!({"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()}),
        Kind::Message(m) => reference(&m, schemas),
    };
    if field.is_list() { json!({"type": "array", "items": single}) } else { single }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{descriptor_pool, routes};

    #[test]
    fn every_workflow_signal_has_its_route_and_outputs_are_any_json() {
        let pool = descriptor_pool();
        let routes = routes(&pool, &["omninode.orchestrator.v1.OrchestratorService"]).unwrap();
        let doc = document(&routes);
        for path in [
            "/v1/workflows/{workflow_id}/steps/{step_name}:approve",
            "/v1/workflows/{workflow_id}/steps/{step_name}:reject",
            "/v1/workflows/{workflow_id}:retry",
            "/v1/workflows/{workflow_id}:pause",
            "/v1/workflows/{workflow_id}:resume",
        ] {
            assert!(doc["paths"][path]["post"].is_object(), "{path} is documented");
        }
        let step = &doc["components"]["schemas"]["omninode.orchestrator.v1.WorkflowStep"]["properties"];
        assert_eq!(step["output"], json!({"description": "any JSON value"}));
        assert_eq!(step["startedAt"], json!({"type": "string", "format": "date-time"}));
    }
}
