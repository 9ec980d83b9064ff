//! The transport: GraphQL over HTTP (`POST /graphql`), GraphiQL (`GET /graphql`, its assets
//! embedded and served from `/graphiql/`, so it works without the internet), subscriptions over
//! WebSocket on the same path (`graphql-transport-ws` and the legacy `graphql-ws`) or over HTTP
//! as `multipart/mixed`, and `GET /health`. Everything else lives in the schema.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::{
    create_multipart_mixed_stream, is_accept_multipart_mixed, WebSocketProtocols, WsMessage,
    ALL_WEBSOCKET_PROTOCOLS,
};
use async_graphql::{BatchRequest, Data};
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::auth::{bearer, ClientAddress, Credentials};
use crate::graphql::{build_schema, WalkoffSchema};
use crate::Gateway;

#[derive(Clone)]
pub struct AppState {
    pub schema: WalkoffSchema,
    pub gateway: Arc<Gateway>,
    /// Turns true when the server is stopping: WebSockets close with a proper frame.
    pub stopping: watch::Receiver<bool>,
    /// Each open WebSocket holds a clone; the server waits until all are gone.
    pub sockets: mpsc::Sender<()>,
}

/// The gateway's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(crate::ui::index))
        .route("/assets/{*path}", get(crate::ui::assets))
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphiql/{asset}", get(graphiql_asset))
        .route("/health", get(health))
        .with_state(state)
}

/// The state for `gateway`, and what stops it: send `true` on the returned sender, then wait
/// on the receiver until every WebSocket has closed (it yields `None`).
pub fn state(gateway: Arc<Gateway>) -> (AppState, watch::Sender<bool>, mpsc::Receiver<()>) {
    let (stop, stopping) = watch::channel(false);
    let (sockets, all_closed) = mpsc::channel(1);
    let state = AppState {
        schema: build_schema(Arc::clone(&gateway)),
        gateway,
        stopping,
        sockets,
    };
    (state, stop, all_closed)
}

/// A response in GraphQL's shape for a request that never reached the schema.
fn refused(status: StatusCode, code: &str, message: String) -> Response {
    let body = json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    (status, axum::Json(body)).into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    match sqlx::query("SELECT 1")
        .execute(state.gateway.store.pool())
        .await
    {
        Ok(_) => axum::Json(json!({"status": "ok"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable", "reason": format!("store: {e}")})),
        )
            .into_response(),
    }
}

async fn credentials(gateway: &Gateway, headers: &HeaderMap) -> Credentials {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    gateway.auth.credentials(authorization).await
}

/// What an oversized request may still send, read and dropped, before its 413 goes out: a
/// client still writing its body when the connection closes sees a reset, not the answer.
const OVERSIZED_DRAIN: usize = 64 * 1024 * 1024;

/// The body when it holds at most `limit` bytes; `None` when it holds more (the rest is read and
/// dropped, up to `OVERSIZED_DRAIN`, so the client gets to read the refusal) or breaks off.
async fn read_limited(body: Body, limit: usize) -> Option<Vec<u8>> {
    let mut chunks = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut over = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.ok()?;
        if over == 0 && bytes.len() + chunk.len() <= limit {
            bytes.extend_from_slice(&chunk);
            continue;
        }
        bytes = Vec::new();
        over += chunk.len();
        if over > OVERSIZED_DRAIN {
            break;
        }
    }
    (over == 0).then_some(bytes)
}

async fn graphql_post(State(state): State<AppState>, request: Request) -> Response {
    let limits = &state.gateway.config.limits;
    let (parts, body) = request.into_parts();
    let bytes = match read_limited(body, limits.max_body_bytes).await {
        Some(bytes) => bytes,
        None => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BAD_USER_INPUT",
                format!(
                    "the request is larger than {} bytes, the most this server accepts",
                    limits.max_body_bytes
                ),
            )
        }
    };
    let batch: BatchRequest = match serde_json::from_slice(&bytes) {
        Ok(batch) => batch,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                format!("the request is not a GraphQL request in JSON: {e}"),
            )
        }
    };
    let credentials = credentials(&state.gateway, &parts.headers).await;
    let multipart = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_accept_multipart_mixed);
    if multipart {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .map(str::to_string);
        return multipart_response(&state, batch, credentials, token);
    }
    let address = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| ClientAddress(info.0.ip()));
    let batch = match address {
        Some(address) => batch.data(address),
        None => batch,
    };
    let run = state.schema.execute_batch(batch.data(credentials));
    match tokio::time::timeout(limits.request_timeout, run).await {
        Ok(response) => axum::Json(response).into_response(),
        Err(_) => refused(
            StatusCode::GATEWAY_TIMEOUT,
            "TIMEOUT",
            format!(
                "the request took longer than {} s and was stopped",
                limits.request_timeout.as_secs()
            ),
        ),
    }
}

/// How often a multipart response sends an empty part, so proxies keep a quiet one open.
const MULTIPART_HEARTBEAT: Duration = Duration::from_secs(30);

/// A subscription (or any operation) answered over HTTP as `multipart/mixed`, one part per
/// result, for clients without WebSockets (`Accept: multipart/mixed; boundary="graphql";
/// subscriptionSpec="1.0"`). It ends with the subscription, or when the server stops, or — with
/// a last part saying why (UNAUTHENTICATED) — when its token expires or its login is revoked.
fn multipart_response(
    state: &AppState,
    batch: BatchRequest,
    credentials: Credentials,
    token: Option<String>,
) -> Response {
    let request = match batch.into_single() {
        Ok(request) => request,
        Err(_) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "a multipart response answers one request, not a batch".into(),
            )
        }
    };
    let mut stopping = state.stopping.clone();
    let ended: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let ending = Arc::clone(&ended);
    let gateway = Arc::clone(&state.gateway);
    let revoked = async move {
        let Some(token) = token else {
            return std::future::pending().await;
        };
        let mut recheck = tokio::time::interval(TOKEN_RECHECK);
        loop {
            recheck.tick().await;
            if let Err(reason) = gateway.auth.check(&token).await {
                *ending.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                return;
            }
        }
    };
    let responses = state
        .schema
        .execute_stream(request.data(credentials))
        .take_until(Box::pin(async move {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => {}
                _ = revoked => {}
            }
        }))
        .chain(
            futures::stream::once(
                async move { ended.lock().unwrap_or_else(|e| e.into_inner()).take() },
            )
            .filter_map(|reason| async move {
                reason.map(|reason| {
                    let mut error = async_graphql::ServerError::new(reason, None);
                    let mut extensions = async_graphql::ErrorExtensionValues::default();
                    extensions.set("code", "UNAUTHENTICATED");
                    error.extensions = Some(extensions);
                    async_graphql::Response::from_errors(vec![error])
                })
            }),
        );
    let responses = Box::pin(responses);
    let parts = create_multipart_mixed_stream(responses, MULTIPART_HEARTBEAT)
        .map(Ok::<_, std::convert::Infallible>);
    (
        [(header::CONTENT_TYPE, "multipart/mixed; boundary=graphql")],
        Body::from_stream(parts),
    )
        .into_response()
}

async fn graphql_get(State(state): State<AppState>, request: Request) -> Response {
    let wants_socket = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !wants_socket {
        return Html(GRAPHIQL_PAGE).into_response();
    }
    let protocol = request
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        });
    let Some(protocol) = protocol else {
        return refused(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "ask for the graphql-transport-ws (or graphql-ws) WebSocket subprotocol".into(),
        );
    };
    let (mut parts, _) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let limits = &state.gateway.config.limits;
    upgrade
        // Small buffers: a server holds thousands of sockets whose messages are small (the
        // default 128 KiB read buffer alone would be most of a subscriber's memory).
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .max_message_size(limits.max_body_bytes)
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve_socket(state, socket, protocol))
}

/// GraphiQL with a login bar; its scripts and styles come from [`GRAPHIQL_ASSETS`].
const GRAPHIQL_PAGE: &str = include_str!("../assets/graphiql/index.html");

/// GraphiQL 4, React 18 and graphql-ws as published on npm (`assets/graphiql/fetch.sh` fetches
/// them again and checks them against `SHA256SUMS`).
const GRAPHIQL_ASSETS: [(&str, &str, &[u8]); 5] = [
    (
        "graphiql.min.js",
        "text/javascript",
        include_bytes!("../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css",
        include_bytes!("../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript",
        include_bytes!("../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript",
        include_bytes!("../assets/graphiql/react-dom.production.min.js"),
    ),
    (
        "graphql-ws.min.js",
        "text/javascript",
        include_bytes!("../assets/graphiql/graphql-ws.min.js"),
    ),
];

async fn graphiql_asset(Path(asset): Path<String>) -> Response {
    match GRAPHIQL_ASSETS.iter().find(|(name, _, _)| *name == asset) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // The files change only with the binary.
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            *bytes,
        )
            .into_response(),
        None => refused(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("there is no GraphiQL asset '{asset}'"),
        ),
    }
}

/// How often an open WebSocket's token is checked again (a cache read, unless it was revoked).
const TOKEN_RECHECK: Duration = Duration::from_secs(2);

/// Read and write buffer of a WebSocket, in bytes (they grow for a larger message).
const SOCKET_BUFFER: usize = 4096;

/// Prefixes of the reasons `connection_init` is refused with, turned into close codes.
const UNAUTHORIZED: &str = "Unauthorized: ";
const FORBIDDEN: &str = "Forbidden: ";

async fn serve_socket(state: AppState, socket: WebSocket, protocol: WebSocketProtocols) {
    let _open = state.sockets.clone();
    let mut stopping = state.stopping.clone();
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|message| futures::future::ready(message.is_ok()))
        .filter_map(|message| {
            futures::future::ready(match message {
                Ok(Message::Text(text)) => Some(text.to_string()),
                Ok(Message::Binary(bytes)) => String::from_utf8(bytes.to_vec()).ok(),
                _ => None,
            })
        });
    let mut connection = Data::default();
    connection.insert(crate::graphql::SubscriptionSlots::new(
        state.gateway.config.limits.max_subscriptions_per_connection,
    ));
    let gateway = Arc::clone(&state.gateway);
    // The token the connection was accepted with, checked again every few seconds: when it
    // expires or its login is revoked, the connection closes with 4403.
    let accepted: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let accepting = Arc::clone(&accepted);
    let messages = async_graphql::http::WebSocket::new(state.schema.clone(), input, protocol)
        .connection_data(connection)
        .on_connection_init(move |payload| async move {
            let authorization = ["Authorization", "authorization"]
                .iter()
                .find_map(|key| {
                    payload
                        .get(key)
                        .or_else(|| payload.get("headers").and_then(|h| h.get(key)))
                })
                .and_then(|v| v.as_str());
            match gateway.auth.credentials(authorization).await {
                Credentials::None => Err(async_graphql::Error::new(format!(
                    "{UNAUTHORIZED}send {{\"Authorization\": \"Bearer <accessToken>\"}} as the connection_init payload"
                ))),
                Credentials::Checked(Err(reason)) => {
                    Err(async_graphql::Error::new(format!("{FORBIDDEN}{reason}")))
                }
                credentials @ Credentials::Checked(Ok(_)) => {
                    let token = authorization.and_then(bearer).map(str::to_string);
                    *accepting.lock().unwrap_or_else(|e| e.into_inner()) = token;
                    let mut data = Data::default();
                    data.insert(credentials);
                    Ok(data)
                }
            }
        });
    futures::pin_mut!(messages);
    let mut recheck = tokio::time::interval(TOKEN_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let close = loop {
        tokio::select! {
            _ = recheck.tick() => {
                let token = accepted.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(token) = token {
                    if let Err(reason) = state.gateway.auth.check(&token).await {
                        break CloseFrame { code: 4403, reason: format!("Forbidden: {reason}").into() };
                    }
                }
            }
            message = messages.next() => {
                // Events come in bursts (a step's end and the next one's start): what is
                // ready goes out in one write instead of one system call per message.
                let mut message = message;
                let ended = loop {
                    match message {
                        Some(WsMessage::Text(text)) => {
                            if sink.feed(Message::Text(text.into())).await.is_err() {
                                return;
                            }
                        }
                        Some(WsMessage::Close(code, reason)) => break Some(close_frame(code, reason)),
                        None => break Some(CloseFrame { code: 1000, reason: "".into() }),
                    }
                    match messages.next().now_or_never() {
                        Some(next) => message = next,
                        None => break None,
                    }
                };
                if sink.flush().await.is_err() {
                    return;
                }
                if let Some(close) = ended {
                    break close;
                }
            }
            _ = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                break CloseFrame { code: 1001, reason: "the server is shutting down".into() };
            }
        }
    };
    let close = CloseFrame {
        code: close.code,
        reason: fit_close_reason(&close.reason).into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
}

/// The close frame for what async-graphql asked for: refused `connection_init`s and
/// subscriptions before the handshake get graphql-ws's 4401 and 4403.
fn close_frame(code: u16, reason: String) -> CloseFrame {
    if let Some(reason) = reason.strip_prefix(UNAUTHORIZED) {
        return CloseFrame {
            code: 4401,
            reason: format!("Unauthorized: {reason}").into(),
        };
    }
    if let Some(reason) = reason.strip_prefix(FORBIDDEN) {
        return CloseFrame {
            code: 4403,
            reason: format!("Forbidden: {reason}").into(),
        };
    }
    if code == 1011 {
        // Subscribing before connection_init was acknowledged.
        return CloseFrame {
            code: 4401,
            reason: "Unauthorized".into(),
        };
    }
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

/// A close frame's reason may hold 123 bytes; longer ones are cut at a character boundary.
fn fit_close_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}
