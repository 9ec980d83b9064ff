//! `walkoff health`: a container's health check, answering for the role it runs. A gateway is
//! healthy when its `/health` answers 200 (the server and its store are up); a worker or an
//! executor when the deployment's Redis answers (neither can do anything without it). Exits 0 when
//! healthy, 1 with the reason otherwise; never waits past its timeout.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct HealthArgs {
    /// A gateway's health URL (`http://127.0.0.1:8080/health`); checked instead of Redis when given.
    #[arg(long, value_name = "URL")]
    http: Option<String>,
    /// The deployment's Redis, for a worker or an executor.
    #[arg(long, value_name = "URL", env = "WALKOFF_REDIS")]
    redis: Option<String>,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

/// GET `url` (plain HTTP, as a gateway serves behind its TLS proxy): whether it answered 200.
fn http_ok(url: &str, timeout: Duration) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let address = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&address, timeout).map_err(|e| format!("{url}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    write!(
        stream,
        "GET /{path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut head = [0u8; 32];
    let read = stream.read(&mut head).map_err(|e| format!("{url}: {e}"))?;
    let status = String::from_utf8_lossy(&head[..read]);
    let code = status.split_whitespace().nth(1).unwrap_or("no answer");
    if code == "200" {
        Ok(())
    } else {
        Err(format!("{url} answered {code}"))
    }
}

fn redis_ok(url: &str, timeout: Duration) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| format!("Redis: {e}"))?;
    let mut connection = client
        .get_connection_with_timeout(timeout)
        .map_err(|e| format!("Redis: {e}"))?;
    connection.set_read_timeout(Some(timeout)).ok();
    let pong: String = redis::cmd("PING")
        .query(&mut connection)
        .map_err(|e| format!("Redis: {e}"))?;
    (pong == "PONG")
        .then_some(())
        .ok_or_else(|| format!("Redis answered {pong}"))
}

pub fn health(args: HealthArgs) -> ExitCode {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let checked = match (&args.http, &args.redis) {
        (Some(url), _) => http_ok(url, timeout),
        (None, Some(url)) => redis_ok(url, timeout),
        (None, None) => {
            Err("give --http URL (a gateway) or --redis URL (a worker or an executor)".into())
        }
    };
    match checked {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            ExitCode::FAILURE
        }
    }
}
