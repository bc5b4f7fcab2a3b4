//! The definition use cases: create the next version of a definition, read
//! one (latest or a given version), list them.

use omninode_core::limits;
use omninode_runtime::paging::{Page, PageRequest};

use super::WorkflowEngine;
use crate::{
    domain::definition::{self, Definition, StepDefinition},
    error::OrchestratorError,
};

/// ListWorkflowDefinitions page sizes: (default, maximum).
const PAGE_SIZES: (u32, u32) = (50, 500);

impl WorkflowEngine {
    /// Checks `steps` and stores them as the next version of `name`.
    pub async fn create_definition(
        &self,
        name: &str,
        description: &str,
        steps: Vec<StepDefinition>,
    ) -> Result<Definition, OrchestratorError> {
        definition::check(name, &steps).map_err(|p| OrchestratorError::Validation(p.to_string()))?;
        limits::check_note("description", description, limits::MAX_NOTE).map_err(OrchestratorError::Validation)?;
        // No store holds a NUL; refuse it in any field alike.
        let text = serde_json::to_string(&steps).map_err(|e| OrchestratorError::Validation(e.to_string()))?;
        if text.contains("\\u0000") {
            return Err(OrchestratorError::Validation("a step field contains a NUL (U+0000) character".into()));
        }
        Ok(self.inner.store.create_definition(name, description, &steps).await?)
    }

    /// `name` (its latest version) or `name@version`.
    pub async fn definition(&self, reference: &str) -> Result<Definition, OrchestratorError> {
        let (name, version) = definition::parse_reference(reference).map_err(OrchestratorError::Validation)?;
        self.inner
            .store
            .definition(&name, version)
            .await?
            .ok_or_else(|| OrchestratorError::DefinitionNotFound(limits::prefix(reference, 80).to_owned()))
    }

    /// One page of definitions by name then version; only `name`'s when not empty.
    pub async fn definitions(
        &self,
        name: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<Definition>, OrchestratorError> {
        let name = match name {
            "" => None,
            name => Some(definition::parse_reference(name).map_err(OrchestratorError::Validation)?.0),
        };
        let request = PageRequest::parse(page_size, page_token, PAGE_SIZES, |key| {
            definition::parse_reference(key).is_ok_and(|(_, version)| version.is_some())
        })
        .map_err(|e| OrchestratorError::Validation(e.into()))?;
        let after = match &request.after {
            Some(key) => {
                let (name, version) = definition::parse_reference(key).map_err(OrchestratorError::Validation)?;
                Some((name, version.unwrap_or_default()))
            }
            None => None,
        };
        let rows = self
            .inner
            .store
            .definitions(name.as_deref(), after.as_ref().map(|(n, v)| (n.as_str(), *v)), request.fetch_limit())
            .await?;
        let keys: Vec<String> = rows.iter().map(|d| format!("{}@{}", d.name, d.version)).collect();
        let page = request.page(rows.into_iter().zip(keys).collect::<Vec<_>>(), |(_, key)| key.as_str());
        Ok(Page { items: page.items.into_iter().map(|(d, _)| d).collect(), next_page_token: page.next_page_token })
    }
}
