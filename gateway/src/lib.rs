//! The REST gateway: HTTP/JSON for every RPC from the contracts' `google.api.http`
//! annotations. It lands with its own issue.
