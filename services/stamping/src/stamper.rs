//! `Stamper`: the stamping use cases over the domain rules and the store.
//! Transports call it; it knows nothing of gRPC.

use chrono::SecondsFormat;
use omninode_core::{
    content_type::content_type_for,
    hash::is_valid_hash,
    limits::{self, MAX_FIELD},
    namespace::resolve_namespace,
    stamp::{StampFields, StampFormat, apply, render},
    time::now,
    validate::{Validation, hash_content, validate},
};
use omninode_runtime::paging::{Page, PageRequest};

use crate::{
    config::StampingConfig,
    domain::StampRecord,
    error::StampingError,
    store::{NewStamp, StampStore, Stored},
};

/// ListStamps page sizes: (default, maximum).
const PAGE_SIZES: (u32, u32) = (100, 1000);

/// One thing to stamp.
#[derive(Debug, Clone, Default)]
pub struct StampInput {
    pub content: String,
    pub file_path: String,
    /// Empty: derived from `file_path`.
    pub content_type: String,
    pub format: Option<StampFormat>,
    pub version: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A stamped content and the record behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampOutcome {
    pub record: StampRecord,
    pub stamped_content: String,
    pub stamp_text: String,
    /// False when the record already existed.
    pub created: bool,
}

/// The stamping use cases.
#[derive(Debug, Clone)]
pub struct Stamper {
    store: StampStore,
    config: StampingConfig,
}

/// An item that passed validation, ready for the store.
struct Prepared {
    input: StampInput,
    format: StampFormat,
    unstamped: String,
    content_type: String,
    new: NewStamp,
}

impl Stamper {
    pub fn new(store: StampStore, config: StampingConfig) -> Self {
        Self { store, config }
    }

    pub fn config(&self) -> &StampingConfig {
        &self.config
    }

    /// Stamps one content; see [`Stamper::stamp_batch`].
    pub async fn stamp(
        &self,
        namespace: &str,
        input: StampInput,
        correlation_id: Option<&str>,
    ) -> Result<StampOutcome, StampingError> {
        let namespace = resolve_namespace(namespace).map_err(StampingError::NamespaceInvalid)?;
        check_correlation(correlation_id)?;
        let prepared = self.prepare(input)?;
        self.store_prepared(&namespace, vec![Ok(prepared)], correlation_id).await?.pop().expect("one item in, one out")
    }

    /// Stamps every item in one transaction; each item succeeds or fails on
    /// its own (bad input, idempotency conflict), in request order.
    pub async fn stamp_batch(
        &self,
        namespace: &str,
        items: Vec<StampInput>,
        correlation_id: Option<&str>,
    ) -> Result<Vec<Result<StampOutcome, StampingError>>, StampingError> {
        let namespace = resolve_namespace(namespace).map_err(StampingError::NamespaceInvalid)?;
        check_correlation(correlation_id)?;
        if items.is_empty() {
            return Err(StampingError::EmptyBatch);
        }
        // The batch's version applies to every item: a bad one is the request's mistake, not an item's.
        if let Some(version) = items.first().and_then(|item| item.version.as_deref()) {
            limits::check_version(version).map_err(StampingError::Validation)?;
        }
        if items.len() > self.config.max_batch_items {
            return Err(StampingError::TooLarge(format!(
                "the batch has {} items; the limit is {} (STAMPING_MAX_BATCH_ITEMS)",
                items.len(),
                self.config.max_batch_items
            )));
        }
        let prepared: Vec<Result<Prepared, StampingError>> = items.into_iter().map(|item| self.prepare(item)).collect();
        // The answer carries every stamped content: refuse before committing
        // a batch whose answer could not be sent.
        let answer: usize = prepared
            .iter()
            .map(|item| item.as_ref().map_or(512, |p| p.unstamped.len() + 2 * p.new.stamp_text.len() + 1024))
            .sum();
        let limit = self.config.max_message_bytes();
        if answer > limit {
            return Err(StampingError::TooLarge(format!(
                "the answer to this batch would be about {answer} bytes, over the {limit}-byte message limit; \
                 send it in smaller batches"
            )));
        }
        self.store_prepared(&namespace, prepared, correlation_id).await
    }

    async fn store_prepared(
        &self,
        namespace: &str,
        items: Vec<Result<Prepared, StampingError>>,
        correlation_id: Option<&str>,
    ) -> Result<Vec<Result<StampOutcome, StampingError>>, StampingError> {
        let new: Vec<NewStamp> = items.iter().filter_map(|i| i.as_ref().ok()).map(|p| p.new.clone()).collect();
        let mut stored = self.store.insert_or_get(namespace, new, correlation_id).await?.into_iter();
        Ok(items
            .into_iter()
            .map(|item| {
                let item = item?;
                match stored.next().expect("one outcome per stored item") {
                    Stored::Created(record) => Ok(finish(item, record, true)),
                    Stored::Existing(record) => Ok(finish(item, record, false)),
                    Stored::KeyConflict { existing_hash } => Err(StampingError::OperationIdConflict {
                        namespace: namespace.to_owned(),
                        key: item.input.idempotency_key.unwrap_or_default(),
                        existing_hash,
                    }),
                }
            })
            .collect())
    }

    /// The hash a Stamp of `content` would record.
    pub fn normalized_hash(&self, content: &[u8]) -> Result<String, StampingError> {
        limits::check_content_size(content.len(), self.config.max_content_bytes).map_err(StampingError::TooLarge)?;
        let text = std::str::from_utf8(content)
            .map_err(|e| StampingError::Validation(format!("content is not UTF-8 text ({e}); normalize needs text")))?;
        Ok(hash_content(text).hash)
    }

    /// Checks a request item and computes everything the store needs.
    fn prepare(&self, input: StampInput) -> Result<Prepared, StampingError> {
        check_input(&input, self.config.max_content_bytes)?;

        let hashed = hash_content(&input.content);
        if hashed.is_empty {
            return Err(StampingError::Validation(
                "content is empty once stamps and surrounding whitespace are removed".into(),
            ));
        }
        let format = input.format.unwrap_or(StampFormat::Lightweight);
        let content_type = match input.content_type.as_str() {
            "" => content_type_for(&input.file_path).to_owned(),
            given => given.to_owned(),
        };
        let file_size = hashed.stripped.content.len() as u64;
        let created_at = now();
        let id = uuid::Uuid::now_v7().to_string();
        let timestamp = created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let stamp_text = render(
            format,
            &StampFields {
                uid: &id,
                hash: &hashed.hash,
                timestamp: &timestamp,
                version: input.version.as_deref(),
                file_path: &input.file_path,
                file_size,
                content_type: &content_type,
            },
        );
        let new = NewStamp {
            id,
            file_hash: hashed.hash,
            file_path: input.file_path.clone(),
            file_size,
            content_type: content_type.clone(),
            op_id: input.idempotency_key.clone(),
            format,
            version: input.version.clone(),
            timestamp,
            stamp_text,
            created_at,
        };
        Ok(Prepared { input, format, unstamped: hashed.stripped.content, content_type, new })
    }

    /// Validates stamped content; `expected_hash` may be empty.
    pub fn validate(&self, content: &str, expected_hash: &str) -> Result<Validation, StampingError> {
        limits::check_content_size(content.len(), self.config.max_content_bytes).map_err(StampingError::TooLarge)?;
        let expected = match expected_hash {
            "" => None,
            hash => Some(checked_hash("expected_hash", hash)?),
        };
        Ok(validate(content, expected))
    }

    /// The record of `file_hash` in `namespace`.
    pub async fn get(&self, namespace: &str, file_hash: &str) -> Result<StampRecord, StampingError> {
        let namespace = resolve_namespace(namespace).map_err(StampingError::NamespaceInvalid)?;
        let file_hash = checked_hash("file_hash", file_hash)?;
        self.store
            .get(&namespace, file_hash)
            .await?
            .ok_or_else(|| StampingError::StampNotFound { namespace, file_hash: file_hash.to_owned() })
    }

    /// One page of a namespace's records, oldest first.
    pub async fn list(
        &self,
        namespace: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<StampRecord>, StampingError> {
        let namespace = resolve_namespace(namespace).map_err(StampingError::NamespaceInvalid)?;
        let request = PageRequest::parse(page_size, page_token, PAGE_SIZES, |id| uuid::Uuid::parse_str(id).is_ok())
            .map_err(|e| StampingError::Validation(e.into()))?;
        let records = self.store.list(&namespace, request.after.as_deref(), request.fetch_limit()).await?;
        Ok(request.page(records, |record| &record.id))
    }
}

/// The response for an item: the stamp is rendered with the record's uid,
/// hash and timestamp, and this request's path, size, type and version.
fn finish(item: Prepared, record: StampRecord, created: bool) -> StampOutcome {
    let stamp_text = render(
        item.format,
        &StampFields {
            uid: &record.id,
            hash: &record.file_hash,
            timestamp: &record.timestamp,
            version: item.input.version.as_deref(),
            file_path: &item.input.file_path,
            file_size: item.new.file_size,
            content_type: &item.content_type,
        },
    );
    let stamped_content = apply(item.format, &item.unstamped, &stamp_text);
    StampOutcome { record, stamped_content, stamp_text, created }
}

/// Checks every field of `input` that Stamp would refuse, except emptiness
/// (which needs the hash): size, file path, content type, key and version.
fn check_input(input: &StampInput, max_content_bytes: usize) -> Result<(), StampingError> {
    limits::check_content_size(input.content.len(), max_content_bytes).map_err(StampingError::TooLarge)?;
    limits::check_stampable(&input.content, &input.file_path, &input.content_type, max_content_bytes)
        .map_err(StampingError::Validation)?;
    if let Some(key) = &input.idempotency_key {
        limits::check_text("idempotency_key", key, MAX_FIELD).map_err(StampingError::Validation)?;
    }
    if let Some(version) = &input.version {
        limits::check_version(version).map_err(StampingError::Validation)?;
    }
    Ok(())
}

fn check_correlation(correlation_id: Option<&str>) -> Result<(), StampingError> {
    match correlation_id {
        Some(id) => limits::check_text("correlation_id", id, MAX_FIELD).map_err(StampingError::Validation),
        None => Ok(()),
    }
}

/// `hash` if it is a BLAKE3 hash; the error names the request `field`.
fn checked_hash<'a>(field: &str, hash: &'a str) -> Result<&'a str, StampingError> {
    if is_valid_hash(hash) {
        Ok(hash)
    } else {
        Err(StampingError::InvalidHashFormat(format!(
            "{field} {:?} is not a BLAKE3 hash (64 lowercase hex characters)",
            limits::prefix(hash, 80)
        )))
    }
}
