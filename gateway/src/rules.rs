//! The route table, read from the `google.api.http` options of every method
//! in the contracts' descriptor set (one source of truth for gRPC, REST and
//! OpenAPI; no hand-written route per RPC).

use omninode_proto::google::api::{HttpRule, http_rule::Pattern};
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, MethodDescriptor, Value};

use crate::template::{PathTemplate, TemplateError};

/// One REST binding of one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    pub http_method: http::Method,
    pub template: PathTemplate,
    pub method: MethodDescriptor,
    /// `*`, a field name, or empty (no body).
    pub body: String,
    /// Empty: the whole response; else the response field sent as the body.
    pub response_body: String,
    /// The success status (`omninode.api.v1.http_success_status`, default 200).
    pub success_status: u16,
    /// Whether and how the route takes the file itself (`omninode.api.v1.http_raw_content`).
    pub raw: Option<RawContent>,
}

/// `omninode.api.v1.HttpRawContent`: a route that takes the file itself.
#[derive(Debug, Clone)]
pub struct RawContent {
    /// The request field the body fills.
    pub request_field: FieldDescriptor,
    /// The response field sent as the body to a client that asks for raw content.
    pub response_field: Option<FieldDescriptor>,
    /// The RPC several files of a multipart upload go to.
    pub batch: Option<MethodDescriptor>,
}

fn raw_content(method: &MethodDescriptor, rule: &DynamicMessage) -> Option<RawContent> {
    let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let request_field = method.input().get_field_by_name(&text("request_field")?)?;
    let response_field = text("response_field").and_then(|name| method.output().get_field_by_name(&name));
    let batch = text("batch_method").and_then(|name| method.parent_service().methods().find(|m| m.name() == name));
    Some(RawContent { request_field, response_field, batch })
}

/// The contracts' descriptors.
pub fn descriptor_pool() -> DescriptorPool {
    DescriptorPool::decode(omninode_proto::FILE_DESCRIPTOR_SET).expect("the compiled descriptor set decodes")
}

/// Every binding (additional bindings included) of every method of `services`,
/// most specific templates first.
pub fn routes(pool: &DescriptorPool, services: &[&str]) -> Result<Vec<Route>, TemplateError> {
    let extension = pool.get_extension_by_name("google.api.http").expect("google.api.http is in the descriptor set");
    let success = pool
        .get_extension_by_name("omninode.api.v1.http_success_status")
        .expect("omninode.api.v1.http_success_status is in the descriptor set");
    let raw = pool
        .get_extension_by_name("omninode.api.v1.http_raw_content")
        .expect("omninode.api.v1.http_raw_content is in the descriptor set");
    let mut routes = Vec::new();
    for service in pool.services().filter(|s| services.contains(&s.full_name())) {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&extension) {
                continue;
            }
            let Value::Message(rule) = options.get_extension(&extension).into_owned() else { continue };
            let Ok(rule) = rule.transcode_to::<HttpRule>() else { continue };
            let success_status = match options.get_extension(&success).as_ref() {
                Value::I32(status) if (200..300).contains(status) => *status as u16,
                _ => 200,
            };
            let raw = match options.has_extension(&raw).then(|| options.get_extension(&raw).into_owned()) {
                Some(Value::Message(rule)) => raw_content(&method, &rule),
                _ => None,
            };
            for binding in std::iter::once(rule.clone()).chain(rule.additional_bindings.clone()) {
                if let Some(mut route) = route(&method, &binding)? {
                    route.success_status = success_status;
                    route.raw = raw.clone();
                    routes.push(route);
                }
            }
        }
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
    Ok(routes)
}

fn route(method: &MethodDescriptor, rule: &HttpRule) -> Result<Option<Route>, TemplateError> {
    let (http_method, path) = match &rule.pattern {
        Some(Pattern::Get(p)) => (http::Method::GET, p),
        Some(Pattern::Post(p)) => (http::Method::POST, p),
        Some(Pattern::Put(p)) => (http::Method::PUT, p),
        Some(Pattern::Delete(p)) => (http::Method::DELETE, p),
        Some(Pattern::Patch(p)) => (http::Method::PATCH, p),
        Some(Pattern::Custom(c)) => (http::Method::from_bytes(c.kind.as_bytes()).unwrap_or(http::Method::GET), &c.path),
        None => return Ok(None),
    };
    Ok(Some(Route {
        http_method,
        template: PathTemplate::parse(path)?,
        method: method.clone(),
        body: rule.body.clone(),
        response_body: rule.response_body.clone(),
        success_status: 200,
        raw: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_annotated_rpc_has_a_route() {
        let pool = descriptor_pool();
        let services = [
            "omninode.stamping.v1.StampingService",
            "omninode.orchestrator.v1.OrchestratorService",
            "omninode.reducer.v1.ReducerService",
        ];
        let routes = routes(&pool, &services).unwrap();
        let names: Vec<&str> = routes.iter().map(|r| r.method.name()).collect();
        for rpc in [
            "Hash",
            "Stamp",
            "Validate",
            "GetStamp",
            "ListStamps",
            "BatchStamp",
            "StartWorkflow",
            "RunWorkflow",
            "GetWorkflow",
            "ListWorkflows",
            "CancelWorkflow",
            "WatchWorkflow",
            "GetNamespaceStats",
            "ListNamespaces",
            "WatchNamespaceStats",
            "Rebuild",
        ] {
            assert!(names.contains(&rpc), "{rpc} has no route");
        }
        let raw = |rpc: &str| routes.iter().find(|r| r.method.name() == rpc).unwrap().raw.clone();
        let stamp = raw("Stamp").expect("Stamp takes files");
        assert_eq!(stamp.request_field.name(), "content");
        assert_eq!(stamp.response_field.map(|f| f.name().to_owned()).as_deref(), Some("stamped_content"));
        assert_eq!(stamp.batch.map(|m| m.name().to_owned()).as_deref(), Some("BatchStamp"));
        assert_eq!(raw("HashStream").expect("HashStream takes a raw body").request_field.name(), "chunk");
        assert!(raw("Validate").expect("Validate takes files").response_field.is_none());
        assert!(raw("GetStamp").is_none());
        let batch = routes.iter().find(|r| r.method.name() == "BatchStamp").unwrap();
        assert_eq!((batch.http_method.clone(), batch.body.as_str()), (http::Method::POST, "*"));
        let status = |rpc: &str| routes.iter().find(|r| r.method.name() == rpc).unwrap().success_status;
        assert_eq!((status("Stamp"), status("StartWorkflow"), status("GetStamp")), (201, 201, 200));
    }
}
