//! The route table, read from the `google.api.http` options of every method
//! in the contracts' descriptor set (one source of truth for gRPC, REST and
//! OpenAPI; no hand-written route per RPC).

use omninode_proto::google::api::{HttpRule, http_rule::Pattern};
use prost_reflect::{DescriptorPool, MethodDescriptor, Value};

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
            for binding in std::iter::once(rule.clone()).chain(rule.additional_bindings.clone()) {
                if let Some(mut route) = route(&method, &binding)? {
                    route.success_status = success_status;
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
        assert!(!names.contains(&"HashStream"), "client streaming has no REST binding");
        let batch = routes.iter().find(|r| r.method.name() == "BatchStamp").unwrap();
        assert_eq!((batch.http_method.clone(), batch.body.as_str()), (http::Method::POST, "*"));
        let status = |rpc: &str| routes.iter().find(|r| r.method.name() == rpc).unwrap().success_status;
        assert_eq!((status("Stamp"), status("StartWorkflow"), status("GetStamp")), (201, 201, 200));
    }
}
