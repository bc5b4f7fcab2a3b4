//! The OpenAPI 3.1 document of the gateway, generated from the same
//! descriptors and annotations that drive the routes: descriptions from the
//! proto comments, the formats and patterns the services enforce, required
//! markers, examples, and the two ways to authenticate.

use std::collections::{BTreeMap, HashMap};

use omninode_core::{limits, namespace::MAX_NAMESPACE_LEN};
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value, json};

use crate::rules::Route;

/// A namespace as the services accept it: lowercase dotted segments.
const NAMESPACE: &str = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$";
/// A BLAKE3 hash.
const HASH: &str = "^[0-9a-f]{64}$";
/// Text without NUL characters (every string field).
const NO_NUL: &str = "^[^\\u0000]*$";
/// Text with something besides white space, and no NUL (content to stamp).
const NOT_BLANK: &str = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$";
/// One line of text: no control characters (C0, DEL, C1).
const ONE_LINE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// One line of text with something besides white space.
const ONE_LINE_NOT_BLANK: &str =
    "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Text without `${` (a reference to the input or an earlier step, which the
/// document cannot check) and without NUL.
const NO_TEMPLATE: &str = "^([^\\u0000$]|\\$[^{\\u0000])*\\$?$";
/// A definition or step name.
const NAME: &str = "^[a-z][a-z0-9_-]{0,63}$";
/// A definition as a workflow names it: `name`, `name@version`, or empty (the built-in pipeline).
const DEFINITION_REFERENCE: &str = "^([a-z][a-z0-9_-]{0,63}(@[1-9][0-9]{0,8})?)?$";

/// Comments of the contracts' elements, by file and source path.
struct Comments(HashMap<(String, Vec<i32>), String>);

impl Comments {
    fn of(pool: &DescriptorPool) -> Self {
        let mut map = HashMap::new();
        for file in pool.files() {
            let proto = file.file_descriptor_proto();
            for location in proto.source_code_info.iter().flat_map(|info| &info.location) {
                let text = location.leading_comments().trim();
                if !text.is_empty() {
                    let text = text.lines().map(str::trim).collect::<Vec<_>>().join("\n");
                    map.insert((file.name().to_owned(), location.path.clone()), text);
                }
            }
        }
        Self(map)
    }

    fn get(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.0.get(&(file.to_owned(), path.to_vec())).map(String::as_str)
    }

    fn message(&self, m: &MessageDescriptor) -> Option<&str> {
        self.get(m.parent_file().name(), m.path())
    }

    fn field(&self, f: &FieldDescriptor) -> Option<&str> {
        self.get(f.parent_file().name(), f.path())
    }

    fn method(&self, m: &MethodDescriptor) -> Option<&str> {
        self.get(m.parent_file().name(), m.path())
    }
}

/// The schema builder: comments and the component schemas built so far.
struct Schemas {
    comments: Comments,
    components: BTreeMap<String, Value>,
}

/// The document for `routes`.
pub fn document(routes: &[Route]) -> Value {
    let Some(pool) = routes.first().map(|r| r.method.parent_pool().clone()) else {
        return json!({"openapi": "3.1.0", "info": {"title": "OmniNode Bridge REST API", "version": env!("CARGO_PKG_VERSION")}, "paths": {}});
    };
    let mut schemas = Schemas { comments: Comments::of(&pool), components: BTreeMap::new() };
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut tags: BTreeMap<String, Value> = BTreeMap::new();
    for route in routes {
        let method = &route.method;
        let service = method.parent_service();
        let service_doc = schemas.comments.get(service.parent_file().name(), service.path()).unwrap_or_default();
        tags.entry(service.name().to_owned())
            .or_insert_with(|| json!({"name": service.name(), "description": service_doc}));
        let operation = schemas.operation(route);
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.http_method.as_str().to_ascii_lowercase(), operation);
    }
    let mut components = std::mem::take(&mut schemas.components);
    components.insert("google.rpc.Status".to_owned(), status_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "OmniNode Bridge REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "HTTP/JSON for the OmniNode Bridge gRPC services, generated from their contracts \
                (`google.api.http` annotations). Every response writes every field, default values included. \
                Errors are a `google.rpc.Status` whose `details` carry a `google.rpc.ErrorInfo` (the reason) \
                and, for an invalid field, a `google.rpc.BadRequest`. Every answer has an `X-Request-Id`.",
        },
        "tags": tags.into_values().collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "A key of `OMNINODE_API_KEYS`."},
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "A JWT signed with `OMNINODE_JWT_SECRET` (HS256)."},
            },
        },
        // Either credential; none when the mesh runs without authentication.
        "security": [{"apiKey": []}, {"bearerAuth": []}, {}],
    })
}

impl Schemas {
    fn operation(&mut self, route: &Route) -> Value {
        let method = &route.method;
        let input = method.input();
        let bound: Vec<&str> = route.template.variables();
        let mut parameters: Vec<Value> = bound
            .iter()
            .map(|path| {
                let field = field_at(&input, path);
                let mut schema = field.as_ref().map(|f| self.field(f)).unwrap_or(json!({"type": "string"}));
                // A path segment is never empty, and a namespace in a path is never the default.
                if path.ends_with("namespace") {
                    schema["pattern"] = json!(NAMESPACE);
                }
                schema["minLength"] = json!(1);
                let description = field.as_ref().and_then(|f| self.comments.field(f)).unwrap_or_default();
                json!({"name": path, "in": "path", "required": true, "schema": schema, "description": description})
            })
            .collect();
        // With a body of the whole message, query parameters are not read
        // (a file upload takes them: see the operation's description).
        let query_fields = match route.body.as_str() {
            "*" => Vec::new(),
            _ => self.scalar_fields(&input, &bound, &route.body),
        };
        for field in query_fields {
            let description = self.comments.field(&field).unwrap_or_default().to_owned();
            let schema = self.field(&field);
            parameters.push(json!({"name": field.name(), "in": "query", "required": false, "schema": schema,
                                   "description": description}));
        }
        let doc = self.comments.method(method).unwrap_or_default().to_owned();
        // The first sentence of the comment.
        let flat = doc.replace('\n', " ");
        let summary = flat.split(". ").next().map(|s| s.trim_end_matches('.')).filter(|s| !s.is_empty());
        let summary = summary.unwrap_or(method.name()).to_owned();
        let output = self.reference(&method.output());
        let success_content = if method.is_server_streaming() {
            json!({"text/event-stream": {"schema": {"type": "string",
                "description": format!("Server-Sent Events; each `data:` is a {} in JSON", method.output().name())}}})
        } else {
            let mut content = json!({"application/json": {"schema": output}});
            if let Some(field) = route.raw.as_ref().and_then(|r| r.response_field.as_ref()) {
                let schema = json!({"type": "string", "description": format!(
                    "With `Accept: application/octet-stream` or `text/*`: the `{}` field as the body, the other \
                     fields of the answer in `Omninode-<Field-Name>` headers.", field.name())});
                content["application/octet-stream"] = json!({"schema": schema});
            }
            content
        };
        let success = route.success_status.to_string();
        let mut responses = json!({
            success.clone(): {"description": "OK", "content": success_content},
            "default": {"description": "An error: a google.rpc.Status with ErrorInfo (and BadRequest) details",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}},
        });
        if success == "201" {
            // An idempotent repeat answers 200 with the same record.
            responses["200"] = responses["201"].clone();
            responses["200"]["description"] = json!("OK: an idempotent repeat, nothing created");
        }
        let mut description = doc.clone();
        if let Some(raw) = &route.raw {
            description.push_str(&raw_description(route, raw));
        }
        let mut operation = json!({
            "operationId": format!("{}_{}", method.parent_service().name(), method.name()),
            "tags": [method.parent_service().name()],
            "summary": summary,
            "description": description.trim(),
            "parameters": parameters,
            "responses": responses,
        });
        let mut body = match route.body.as_str() {
            "" => None,
            "*" if method.is_client_streaming() => Some(Map::new()),
            "*" => {
                let schema = self.body_schema(&input, &bound);
                Some(Map::from_iter([("application/json".to_owned(), json!({"schema": schema}))]))
            }
            field => match input.get_field_by_name(field).map(|f| f.kind()) {
                Some(Kind::Message(desc)) => {
                    Some(Map::from_iter([("application/json".to_owned(), json!({"schema": self.reference(&desc)}))]))
                }
                _ => None,
            },
        };
        if let (Some(content), Some(raw)) = (body.as_mut(), &route.raw) {
            let what = match raw.request_field.kind() {
                Kind::String => "the file, UTF-8 text",
                _ => "the file, any bytes",
            };
            let mut file = match raw.request_field.kind() {
                Kind::String => string_schema(&raw.request_field),
                _ => json!({"type": "string"}),
            };
            file["contentMediaType"] = json!("application/octet-stream");
            file["description"] = json!(what);
            content.insert("application/octet-stream".to_owned(), json!({"schema": file}));
            if !method.is_client_streaming() {
                // The other fields are form fields, by their proto names.
                let mut properties = Map::new();
                for field in self.scalar_fields(&input, &bound, raw.request_field.name()) {
                    let schema = self.field(&field);
                    properties.insert(field.name().to_owned(), schema);
                }
                let mut file = match raw.request_field.kind() {
                    Kind::String => string_schema(&raw.request_field),
                    _ => json!({"type": "string", "format": "binary"}),
                };
                file["contentMediaType"] = json!(if raw.request_field.kind() == Kind::String {
                    "text/plain"
                } else {
                    "application/octet-stream"
                });
                file["description"] = json!("The file (a part with a filename, or named file)");
                properties.insert("file".to_owned(), file);
                content.insert(
                    "multipart/form-data".to_owned(),
                    json!({"schema": {"type": "object", "properties": properties, "required": ["file"],
                                      "additionalProperties": false}}),
                );
            }
        }
        if let Some(content) = body {
            // An empty body is the empty message, unless the message has required fields.
            let required = REQUIRED.iter().any(|(m, _)| *m == input.name()) || method.is_client_streaming();
            operation["requestBody"] = json!({"required": required, "content": content});
        }
        operation
    }

    /// The scalar fields of `message` a request can set besides the path's and `skip`.
    fn scalar_fields(&self, message: &MessageDescriptor, bound: &[&str], skip: &str) -> Vec<FieldDescriptor> {
        message
            .fields()
            .filter(|f| {
                !bound.iter().any(|b| b.split('.').next() == Some(f.name()))
                    && f.name() != skip
                    && !matches!(f.kind(), Kind::Message(_))
            })
            .collect()
    }

    /// The schema of a whole-message body: the message without the fields
    /// the path binds (the path's values win; the body's are not read).
    fn body_schema(&mut self, message: &MessageDescriptor, bound: &[&str]) -> Value {
        let reference = self.reference(message);
        let top: Vec<&str> = bound.iter().filter(|b| !b.contains('.')).copied().collect();
        if top.is_empty() {
            return reference;
        }
        let mut schema = self.components[message.full_name()].clone();
        for name in top {
            let json_name = message.get_field_by_name(name).map(|f| f.json_name().to_owned()).unwrap_or_default();
            if let Some(properties) = schema["properties"].as_object_mut() {
                properties.remove(&json_name);
            }
            if let Some(required) = schema["required"].as_array_mut() {
                required.retain(|r| r != &json!(json_name));
            }
        }
        schema
    }

    fn reference(&mut self, message: &MessageDescriptor) -> Value {
        let name = message.full_name().to_owned();
        // Well-known types have their own JSON forms.
        match message.full_name() {
            "google.protobuf.Timestamp" => {
                return json!({"type": "string", "format": "date-time", "examples": ["2026-01-02T03:04:05Z"]});
            }
            "google.protobuf.Value" => return json!({"description": "any JSON value"}),
            "google.protobuf.Struct" => return json!({"type": "object"}),
            "google.protobuf.ListValue" => return json!({"type": "array"}),
            _ => {}
        }
        if !self.components.contains_key(&name) {
            self.components.insert(name.clone(), Value::Null); // placeholder: recursion stops here
            let properties: Map<String, Value> = message
                .fields()
                .map(|f| {
                    let schema = self.field(&f);
                    let required = REQUIRED.contains(&(message.name(), f.name()));
                    (f.json_name().to_owned(), if required { schema } else { nullable(schema) })
                })
                .collect();
            let mut schema = json!({"type": "object", "properties": properties});
            if let Some(doc) = self.comments.message(message) {
                schema["description"] = json!(doc);
            }
            let required: Vec<String> = message
                .fields()
                .filter(|f| REQUIRED.contains(&(message.name(), f.name())))
                .map(|f| f.json_name().to_owned())
                .collect();
            if !required.is_empty() {
                schema["required"] = json!(required);
            }
            // A oneof holds exactly one of its fields (the services refuse none or two).
            let oneofs: Vec<Value> = message
                .oneofs()
                .filter(|o| !o.is_synthetic())
                .map(|o| {
                    let present = |f: FieldDescriptor| {
                        json!({"required": [f.json_name()], "properties": {f.json_name(): {"not": {"type": "null"}}}})
                    };
                    json!({"oneOf": o.fields().map(present).collect::<Vec<_>>()})
                })
                .collect();
            if !oneofs.is_empty() {
                schema["allOf"] = json!(oneofs);
            }
            self.components.insert(name.clone(), schema);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else { unreachable!("a map entry") };
            let value = entry.map_entry_value_field();
            let mut schema = json!({"type": "object", "additionalProperties": self.field(&value)});
            if (field.parent_message().name(), field.name()) == ("WorkflowInput", "context") {
                schema["maxProperties"] = json!(limits::MAX_CONTEXT_ENTRIES);
                schema["propertyNames"] = json!({"pattern": ONE_LINE, "maxLength": limits::MAX_FIELD});
                schema["additionalProperties"] =
                    json!({"type": "string", "pattern": NO_NUL, "maxLength": limits::MAX_NOTE});
            }
            if let Some(doc) = self.comments.field(field) {
                schema["description"] = json!(doc);
            }
            return schema;
        }
        let mut single = match field.kind() {
            Kind::String => string_schema(field),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
            // Page sizes over a list's maximum are lowered to it (AIP-158), not refused.
            Kind::Uint32 | Kind::Fixed32 => match (field.parent_message().name(), field.name()) {
                ("StepRetryPolicy", "max_attempts") => json!({"type": "integer", "minimum": 1, "maximum": 100}),
                ("StepDefinition", "timeout_ms") => {
                    json!({"type": "integer", "minimum": 0, "maximum": 30_u64 * 24 * 3600 * 1000})
                }
                _ => json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX}),
            },
            // proto3 JSON writes 64-bit integers as strings.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
            Kind::Uint64 | Kind::Fixed64 => match (field.parent_message().name(), field.name()) {
                // 1 ms to 366 days.
                ("TimerStep", "duration_ms") => {
                    json!({"type": "string", "format": "uint64", "pattern": "^[1-9][0-9]{0,9}$"})
                }
                _ => json!({"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}),
            },
            Kind::Float | Kind::Double => json!({"type": "number"}),
            // proto3 JSON takes an enum value by name or by number; answers name it.
            Kind::Enum(e) => json!({"anyOf": [
                {"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()},
                {"type": "integer", "enum": e.values().map(|v| v.number()).collect::<Vec<_>>()},
            ]}),
            Kind::Message(m) => self.reference(&m),
        };
        let doc = self.comments.field(field).map(str::to_owned);
        let mut schema = if field.is_list() {
            let mut list = json!({"type": "array", "items": single});
            match (field.parent_message().name(), field.name()) {
                (_, "items") => list["minItems"] = json!(1),
                ("WorkflowDefinition", "steps") => {
                    list["minItems"] = json!(1);
                    list["maxItems"] = json!(50);
                }
                _ => {}
            }
            list
        } else {
            single.take()
        };
        if let (Some(doc), Some(object)) = (doc, schema.as_object_mut()) {
            if object.contains_key("$ref") {
                // A $ref's siblings are allowed in 3.1; the description says what this field holds.
                object.insert("description".into(), json!(doc));
            } else {
                object.entry("description").or_insert(json!(doc));
            }
        }
        schema
    }
}

/// proto3 JSON takes `null` for any field (it means the default value).
fn nullable(mut schema: Value) -> Value {
    match schema.get_mut("type") {
        Some(Value::String(t)) => {
            let t = t.clone();
            schema["type"] = json!([t, "null"]);
            schema
        }
        _ => {
            let description = schema.as_object_mut().and_then(|o| o.remove("description"));
            let mut wrapped = json!({"anyOf": [schema, {"type": "null"}]});
            if let Some(description) = description {
                wrapped["description"] = description;
            }
            wrapped
        }
    }
}

/// Request fields the services refuse when they are missing (message, field).
const REQUIRED: &[(&str, &str)] = &[
    ("StartWorkflowRequest", "input"),
    ("RunWorkflowRequest", "input"),
    ("ApproveStepRequest", "approver"),
    ("RejectStepRequest", "approver"),
    ("CreateWorkflowDefinitionRequest", "definition"),
    ("BatchStampRequest", "items"),
    ("WorkflowDefinition", "name"),
    ("WorkflowDefinition", "steps"),
    ("StepDefinition", "name"),
    ("StampRequest", "content"),
    ("HttpStep", "method"),
    ("HttpStep", "url"),
    ("LlmStep", "prompt"),
    ("StepRetryPolicy", "max_attempts"),
];

/// A string field's format, pattern, length and example, as the services check it.
fn string_schema(field: &FieldDescriptor) -> Value {
    let message = field.parent_message();
    match (message.name(), field.name()) {
        // A batch item that cannot be stamped fails on its own, in the answer, not the call.
        ("BatchStampItem", _) => json!({"type": "string"}),
        (_, "namespace") => json!({"type": "string", "pattern": format!("^({})?$", &NAMESPACE[1..NAMESPACE.len() - 1]),
            "maxLength": MAX_NAMESPACE_LEN, "examples": ["omninode.bridge"],
            "description": "Lowercase dotted segments; empty means omninode.bridge"}),
        ("StampRecord" | "GetStampRequest", "file_hash")
        | ("HashResponse" | "HashStreamResponse", "hash")
        | ("ValidateResponse", "current_hash") => {
            json!({"type": "string", "pattern": HASH, "examples": [EXAMPLE_HASH]})
        }
        (_, "file_hash" | "expected_hash") => {
            json!({"type": "string", "pattern": "^([0-9a-f]{64})?$", "examples": [EXAMPLE_HASH]})
        }
        ("StampRecord", "stamp_id") | (_, "workflow_id") => {
            json!({"type": "string", "format": "uuid", "examples": ["01936c53-7f7a-7b6e-9c1d-2f4e5a6b7c8d"]})
        }
        // Stamping writes the path into the stamp and the type into the record: one line each.
        ("StampRequest" | "StampRecord", "file_path") => {
            json!({"type": "string", "pattern": ONE_LINE, "maxLength": limits::MAX_FILE_PATH, "examples": ["src/app.py"]})
        }
        ("StampRequest" | "StampRecord", "content_type") => {
            json!({"type": "string", "pattern": ONE_LINE, "maxLength": limits::MAX_FIELD, "examples": ["text/x-python"]})
        }
        // A workflow's input is checked when it runs: what is not one line fails the workflow, not the call.
        ("WorkflowInput" | "Workflow", "file_path" | "content_type") => json!({"type": "string", "pattern": NO_NUL}),
        ("StampRequest" | "BatchStampRequest", "version") => {
            json!({"type": "string", "pattern": "^[A-Za-z0-9._+-]{0,64}$", "examples": ["1.0.0"]})
        }
        ("WorkflowDefinition", "name")
        | ("StepDefinition", "name")
        | ("ApproveStepRequest" | "RejectStepRequest", "step_name") => {
            json!({"type": "string", "pattern": NAME, "examples": ["review"]})
        }
        ("GetWorkflowDefinitionRequest", "name") => {
            json!({"type": "string", "pattern": &DEFINITION_REFERENCE.replace(")?)?$", ")?)$"), "examples": ["review@1"]})
        }
        (_, "definition") => json!({"type": "string", "pattern": DEFINITION_REFERENCE, "examples": ["review"]}),
        (_, "approver") => json!({"type": "string", "pattern": ONE_LINE_NOT_BLANK, "maxLength": limits::MAX_FIELD}),
        (_, "correlation_id" | "idempotency_key") => {
            json!({"type": "string", "pattern": ONE_LINE, "maxLength": limits::MAX_FIELD})
        }
        ("StampRequest", "content") => {
            json!({"type": "string", "pattern": NOT_BLANK, "minLength": 1, "examples": ["print('hello')\n"]})
        }
        // A batch item that cannot be stamped fails on its own, in the answer; validation takes any text.
        ("WorkflowInput", "content") => json!({"type": "string", "pattern": NO_NUL, "examples": ["print('hello')\n"]}),
        (_, "content") => json!({"type": "string", "examples": ["print('hello')\n"]}),
        ("WorkflowDefinition", "description")
        | (
            "CancelWorkflowRequest" | "RetryWorkflowRequest" | "PauseWorkflowRequest" | "ResumeWorkflowRequest",
            "reason",
        )
        | ("ApproveStepRequest" | "RejectStepRequest", "comment") => {
            json!({"type": "string", "pattern": NO_NUL, "maxLength": limits::MAX_NOTE})
        }
        ("HttpStep", "method") => json!({"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]}),
        ("HttpStep", "url") => {
            json!({"type": "string", "pattern": "^https?://([^\\u0000$]|\\$[^{\\u0000])*\\$?$", "examples": ["https://example.com/hook"]})
        }
        ("HttpStep", "body") | ("LlmStep", "system") => json!({"type": "string", "pattern": NO_TEMPLATE}),
        ("LlmStep", "prompt") => {
            json!({"type": "string", "allOf": [{"pattern": NOT_BLANK}, {"pattern": NO_TEMPLATE}], "examples": ["Summarise the file"]})
        }
        // A definition's steps are stored as they are: no NUL anywhere in them.
        ("StepDefinition" | "HttpStep" | "ApprovalStep" | "TimerStep" | "LlmStep" | "StampStep", _) => {
            json!({"type": "string", "pattern": NO_NUL})
        }
        _ => json!({"type": "string"}),
    }
}

const EXAMPLE_HASH: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

fn raw_description(route: &Route, raw: &crate::rules::RawContent) -> String {
    let mut text = format!(
        "\n\nThe file may be sent as it is: a body of type `application/octet-stream` or `text/*` is the `{}` field, \
         the other fields come from query parameters or `Omninode-<Field-Name>` headers (e.g. `Omninode-File-Path`).",
        raw.request_field.name()
    );
    if !route.method.is_client_streaming() {
        text.push_str(
            " A `multipart/form-data` body carries the file as a part with a filename (its name is the `file_path`)",
        );
        match &raw.batch {
            Some(batch) => text.push_str(&format!("; several files are stamped as one {}.", batch.name())),
            None => text.push('.'),
        }
    } else {
        text.push_str(" The body may be of any length: it is hashed as it arrives.");
    }
    text
}

fn status_schema() -> Value {
    json!({"type": "object", "description": "google.rpc.Status", "properties": {
        "code": {"type": "integer", "format": "int32", "description": "The gRPC status code"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object", "properties": {
            "@type": {"type": "string", "examples": ["type.googleapis.com/google.rpc.ErrorInfo"]},
            "reason": {"type": "string", "description": "ErrorInfo: the reason (see the README's registry)"},
            "domain": {"type": "string"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "fieldViolations": {"type": "array", "items": {"type": "object", "properties": {
                "field": {"type": "string"}, "description": {"type": "string"}}}},
            "requestId": {"type": "string", "description": "RequestInfo: the X-Request-Id to quote"},
            "servingData": {"type": "string", "description": "RequestInfo: trace_id=… when the request was traced"},
        }, "required": ["@type"]}},
    }, "required": ["code", "message", "details"]})
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{descriptor_pool, routes};

    fn doc() -> Value {
        let pool = descriptor_pool();
        let services = [
            "omninode.stamping.v1.StampingService",
            "omninode.orchestrator.v1.OrchestratorService",
            "omninode.reducer.v1.ReducerService",
        ];
        document(&routes(&pool, &services).unwrap())
    }

    #[test]
    fn every_workflow_signal_has_its_route_and_outputs_are_any_json() {
        let doc = doc();
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
        assert_eq!(step["output"]["description"].as_str().map(|d| d.is_empty()), Some(false));
        assert!(step["output"].get("type").is_none(), "any JSON value");
        assert_eq!(step["startedAt"]["format"], "date-time");
    }

    #[test]
    fn the_document_describes_itself_from_the_contracts() {
        let doc = doc();
        let stamp = &doc["paths"]["/v1/namespaces/{namespace}/stamps"]["post"];
        assert!(stamp["description"].as_str().unwrap().starts_with("Normalises content, hashes it"), "{stamp}");
        assert_eq!(stamp["tags"][0], "StampingService");
        let namespace = &stamp["parameters"][0];
        assert_eq!((namespace["in"].as_str(), namespace["required"].as_bool()), (Some("path"), Some(true)));
        assert_eq!(namespace["schema"]["pattern"], NAMESPACE);
        for media in ["application/json", "application/octet-stream", "multipart/form-data"] {
            assert!(stamp["requestBody"]["content"][media].is_object(), "{media}");
        }
        assert!(stamp["responses"]["201"]["content"]["application/octet-stream"].is_object());
        let get = &doc["paths"]["/v1/namespaces/{namespace}/stamps/{file_hash}"]["get"];
        assert_eq!(get["parameters"][1]["schema"]["pattern"], HASH);
        let record = &doc["components"]["schemas"]["omninode.stamping.v1.StampRecord"];
        assert_eq!(record["properties"]["stampId"]["format"], "uuid");
        assert_eq!(record["properties"]["fileHash"]["description"], "BLAKE3 of the normalised content.");
        let run = &doc["components"]["schemas"]["omninode.orchestrator.v1.RunWorkflowRequest"];
        assert_eq!(run["required"], json!(["input"]));
        assert!(doc["components"]["securitySchemes"]["apiKey"].is_object());
        assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
        assert!(
            doc["paths"]["/v1/hash:stream"]["post"]["requestBody"]["content"]["application/octet-stream"].is_object()
        );
        let tags: Vec<&str> = doc["tags"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(tags, ["OrchestratorService", "ReducerService", "StampingService"]);
    }
}
