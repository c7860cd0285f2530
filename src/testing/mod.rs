//! Test doubles shared by the integration tests and the benchmark program.
//! They only ever bind 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{App, HttpServer, web};

pub mod fake_discord;
pub mod fake_slack;
pub mod fake_telegram;
pub mod fake_upstream;
pub mod postgres;

/// How long a fake server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a fake platform's HTTP API on its own thread with its own actix
/// system, on 127.0.0.1 port 0, and answers its address. `setup` runs first
/// inside that system (to start other listeners there); `configure` adds
/// the app's data and routes.
fn serve_on_thread(
    name: &'static str,
    setup: impl FnOnce() + Send + 'static,
    configure: impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sys = actix_web::rt::System::new();
        sys.block_on(async move {
            setup();
            let server = HttpServer::new(move || App::new().configure(configure.clone()))
                .workers(1)
                .disable_signals()
                .shutdown_timeout(0)
                .bind(("127.0.0.1", 0));
            let server = match server {
                Ok(s) => s,
                Err(e) => panic!("{name} cannot bind: {e}"),
            };
            let _ = tx.send(server.addrs()[0]);
            let _ = server.run().await;
        });
    });
    rx.recv_timeout(START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{name} did not start: {e}"))
}

/// [`serve_on_thread`] plus a raw listener on 127.0.0.1 port 0 for the
/// fake's websocket (served by `accept` on the fake's thread); answers the
/// API's address and the listener's.
fn serve_with_socket<A, F>(
    name: &'static str,
    accept: A,
    configure: impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
) -> (SocketAddr, SocketAddr)
where
    A: FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let socket = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .unwrap_or_else(|e| panic!("{name} cannot bind its socket: {e}"));
    let socket_addr = socket
        .local_addr()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let api = serve_on_thread(
        name,
        move || match tokio::net::TcpListener::from_std(socket) {
            Ok(l) => drop(actix_web::rt::spawn(accept(l))),
            Err(e) => panic!("{name} socket: {e}"),
        },
        configure,
    );
    (api, socket_addr)
}
