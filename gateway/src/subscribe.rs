//! `GET /v1/events:subscribe`: the WebSocket side of the fan-out.
//!
//! The first subscription comes from the query (`namespace`, `workflowId`,
//! `eventType`, each repeatable; none means everything), and `after` (or
//! `lastEventId`) resumes after the last event a client saw: the events in
//! between arrive first, once, or a `{"type":"gap"}` message says they are
//! older than the history kept. A later text message
//! `{"namespaces":[…],"workflowIds":[…],"eventTypes":[…]}` replaces the
//! filter. Every event is one text message of proto3 JSON. Credentials come
//! as on every route (`x-api-key`, `Authorization: Bearer`), or — browsers
//! cannot set headers on a WebSocket — as a subprotocol `omninode.key.<KEY>`
//! or `omninode.bearer.<JWT>` beside `omninode.v1`; events of namespaces the
//! caller may not read are never sent. The server pings every
//! [`PING_EVERY`] and closes a connection silent for three of them; a
//! subscriber that falls behind is closed with [`CLOSE_TOO_SLOW`], and one
//! whose connection stays blocked for [`STALL_LIMIT`] is dropped.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    extract::{
        State,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, HeaderValue, Uri},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt, StreamExt};
use omninode_runtime::{ServiceError, auth::Caller};
use serde_json::json;
use tonic::{Code, Status};

use crate::{
    Gateway, error_response,
    events::{CLOSE_TOO_SLOW, EventHub, Filter, Published},
};

/// How often the server pings.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// How long one write may stay blocked before the connection is dropped.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);
/// The subprotocol of this API.
pub const PROTOCOL: &str = "omninode.v1";

pub(crate) async fn subscribe(
    State(gateway): State<Arc<Gateway>>,
    uri: Uri,
    mut headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(hub) = gateway.hub.clone() else {
        let status = Status::new(Code::Unavailable, "the event stream is not connected in this gateway");
        return error_response(&status, None);
    };
    // Browsers send credentials as subprotocols.
    let offered: Vec<String> = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect();
    for protocol in &offered {
        let credential = match (protocol.strip_prefix("omninode.key."), protocol.strip_prefix("omninode.bearer.")) {
            (Some(key), _) => Some(("x-api-key", key.to_owned())),
            (_, Some(token)) => Some(("authorization", format!("Bearer {token}"))),
            _ => None,
        };
        if let Some((name, value)) = credential
            && let Ok(value) = HeaderValue::from_str(&value)
        {
            headers.insert(name, value);
        }
    }
    let caller = match gateway.auth.authenticate(&headers) {
        Ok(caller) => caller,
        Err(denied) => return error_response(&denied.into_status(), None),
    };
    let (filter, after) = match query_filter(uri.query().unwrap_or_default()) {
        Ok(parsed) => parsed,
        Err(bad) => return error_response(&Status::new(Code::InvalidArgument, bad), None),
    };
    let upgrade = if offered.iter().any(|p| p == PROTOCOL) { upgrade.protocols([PROTOCOL]) } else { upgrade };
    upgrade
        .max_message_size(64 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .on_upgrade(move |socket| serve(socket, hub, caller, filter, after))
        .into_response()
}

/// The filter and resume point of the query string.
fn query_filter(query: &str) -> Result<(Filter, Option<String>), String> {
    let mut filter = Filter::default();
    let mut after = None;
    for (name, value) in crate::transcode::form_urlencoded(query) {
        match name.as_str() {
            "namespace" => filter.namespaces.insert(value),
            "workflowId" | "workflow_id" => filter.workflow_ids.insert(value),
            "eventType" | "event_type" => filter.event_types.insert(value),
            "after" | "lastEventId" => {
                after = Some(value);
                true
            }
            other => {
                return Err(format!("unknown query parameter {other:?} (namespace, workflowId, eventType, after)"));
            }
        };
    }
    filter.check()?;
    Ok((filter, after))
}

async fn serve(socket: WebSocket, hub: EventHub, caller: Caller, filter: Filter, after: Option<String>) {
    let mut subscription = hub.subscribe(caller, filter, after.as_deref());
    let (mut sink, mut stream) = socket.split();
    let id = subscription.id;
    let mut ok = true;
    if subscription.gap {
        let gap = json!({"type": "gap", "message": format!(
            "event {:?} is not among the events kept; events since then may be missing",
            after.unwrap_or_default()
        )});
        ok = send(&mut sink, Message::Text(gap.to_string().into())).await;
    }
    for event in std::mem::take(&mut subscription.backlog) {
        if !ok {
            break;
        }
        ok = deliver(&event, &mut sink).await;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut silent = 0u32;
    while ok {
        tokio::select! {
            event = subscription.queue.recv() => match event {
                Some(event) => ok = deliver(&event, &mut sink).await,
                None => {
                    if subscription.slow.load(Ordering::SeqCst) {
                        let reason = "too slow: the event queue of this subscriber overflowed; reconnect with after=<last eventId>";
                        let frame = CloseFrame { code: CLOSE_TOO_SLOW, reason: Utf8Bytes::from(reason) };
                        send(&mut sink, Message::Close(Some(frame))).await;
                    }
                    break;
                }
            },
            incoming = stream.next() => {
                silent = 0;
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let answer = match serde_json::from_str::<Filter>(&text).map_err(|e| e.to_string()).and_then(|f| f.check().map(|()| f)) {
                            Ok(filter) => {
                                *subscription.filter.write().expect("filter") = filter;
                                json!({"type": "subscribed"})
                            }
                            Err(problem) => json!({"type": "error", "message": format!("not a filter: {problem}")}),
                        };
                        ok = send(&mut sink, Message::Text(answer.to_string().into())).await;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
            _ = ping.tick() => {
                silent += 1;
                if silent > 3 {
                    break;
                }
                ok = send(&mut sink, Message::Ping(Default::default())).await;
            }
        }
    }
    hub.unsubscribe(id);
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Sends one message; false when the connection is gone or stayed blocked for [`STALL_LIMIT`].
async fn send(sink: &mut Sink, message: Message) -> bool {
    tokio::time::timeout(STALL_LIMIT, sink.send(message)).await.is_ok_and(|sent| sent.is_ok())
}

/// Sends one event; false when the connection is gone or stalled.
async fn deliver(event: &Published, sink: &mut Sink) -> bool {
    let ok = send(sink, Message::Text(event.json().to_owned().into())).await;
    if ok {
        metrics::counter!("ws_events_sent_total").increment(1);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_the_first_filter() {
        let (filter, after) =
            query_filter("namespace=a.b&namespace=c&workflowId=w1&eventType=StampCreated&after=e%201").unwrap();
        assert_eq!(filter.namespaces.len(), 2);
        assert!(filter.workflow_ids.contains("w1") && filter.event_types.contains("StampCreated"));
        assert_eq!(after.as_deref(), Some("e 1"));
        assert_eq!(query_filter("").unwrap(), (Filter::default(), None));
        assert!(query_filter("eventType=Nope").unwrap_err().contains("Nope"));
        assert!(query_filter("ns=a").unwrap_err().contains("unknown query parameter"));
    }
}
