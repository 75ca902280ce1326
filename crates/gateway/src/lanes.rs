//! The serving threads ("lanes"): one single-threaded runtime per core, each serving the client
//! connections handed to it, from the first byte to the last, with the handler and the upstream
//! HTTP/1.1 connection a call drives on the same thread.
//!
//! # Why not tokio's multi-threaded scheduler
//! A proxied call is one task that mostly waits on sockets. Under tokio's work-stealing
//! scheduler that task and its data move between cores, and idle workers are woken to steal it.
//! Measured on the project's 2-core machine, serving this way took a call from 34 to 29 µs of
//! CPU and let 16-18 % more calls through (docs/benchmarks.md, issue 19's step 9). nginx serves
//! the same way: one event loop per core. The price is balance: a connection stays on its lane,
//! so connections are handed to the lane with the fewest open at the moment they arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{mpsc, oneshot, watch};

use crate::gateway::Gateway;
use crate::wakes::SelfWakesInPlace;

/// A client connection counted open until it ends (in the gateway's metrics and on its lane).
pub struct OpenConnection {
    gateway: Arc<Gateway>,
    lane_load: Option<Arc<AtomicUsize>>,
}

impl OpenConnection {
    /// Counts a new connection in, unless `max` are open already.
    pub fn admit(gateway: &Arc<Gateway>, max: usize) -> Option<OpenConnection> {
        gateway
            .metrics
            .connection_opened(max)
            .then(|| OpenConnection {
                gateway: gateway.clone(),
                lane_load: None,
            })
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gateway.metrics.connection_closed();
        if let Some(load) = &self.lane_load {
            load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection on its way to a lane.
type Handed = (std::net::TcpStream, OpenConnection);

/// One serving thread, as the accept loop sees it.
struct Lane {
    /// Connections handed to it; closing this ends the lane (after a graceful drain).
    incoming: mpsc::UnboundedSender<Handed>,
    /// How many of its connections are open.
    load: Arc<AtomicUsize>,
    /// How many connections it still held when its grace period ended.
    drained: oneshot::Receiver<usize>,
}

/// The serving threads of one `serve`.
pub struct Lanes {
    lanes: Vec<Lane>,
    /// Dropped once every lane has drained: a lane keeps its runtime (and whatever runs on it,
    /// such as an HTTP/2 connection other lanes' calls share) until then.
    release: watch::Sender<()>,
}

impl Lanes {
    /// Starts `count` serving threads (at least one) for `gateway`. Fails only when the system
    /// cannot start a thread or a runtime.
    pub fn start(gateway: &Arc<Gateway>, count: usize) -> std::io::Result<Lanes> {
        let (release, released) = watch::channel(());
        let mut lanes = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (incoming, handed) = mpsc::unbounded_channel();
            let (done, drained) = oneshot::channel();
            let load = Arc::new(AtomicUsize::new(0));
            let gateway = gateway.clone();
            let mut released = released.clone();
            let lane_load = load.clone();
            std::thread::Builder::new()
                .name(format!("hourglass-lane-{index}"))
                .spawn(move || {
                    let open = runtime.block_on(run(gateway, handed, lane_load));
                    let _ = done.send(open);
                    runtime.block_on(async move { while released.changed().await.is_ok() {} });
                })?;
            lanes.push(Lane {
                incoming,
                load,
                drained,
            });
        }
        Ok(Lanes { lanes, release })
    }

    /// Hands a connection to the lane with the fewest open.
    pub fn hand(&self, stream: tokio::net::TcpStream, mut open: OpenConnection) {
        let Some(lane) = self
            .lanes
            .iter()
            .min_by_key(|lane| lane.load.load(Ordering::Relaxed))
        else {
            return;
        };
        // Taken out of this runtime's reactor: the lane registers it with its own.
        let Ok(stream) = stream.into_std() else {
            return;
        };
        lane.load.fetch_add(1, Ordering::Relaxed);
        open.lane_load = Some(lane.load.clone());
        let _ = lane.incoming.send((stream, open));
    }

    /// Stops handing connections: every lane serves what it was handed, gives its calls
    /// `server.shutdown_grace` to finish, and ends the rest. Returns how many connections were
    /// still open when the grace period ended, over all lanes.
    pub async fn drain(self) -> usize {
        let mut open = 0;
        let mut drained = Vec::with_capacity(self.lanes.len());
        for lane in self.lanes {
            drop(lane.incoming);
            drained.push(lane.drained);
        }
        for lane in drained {
            open += lane.await.unwrap_or(0);
        }
        drop(self.release);
        open
    }
}

/// One lane's life: serves the connections handed to it until the accept loop stops, then
/// drains them. Returns how many were still open when the grace period ended.
async fn run(
    gateway: Arc<Gateway>,
    mut handed: mpsc::UnboundedReceiver<Handed>,
    load: Arc<AtomicUsize>,
) -> usize {
    let graceful = GracefulShutdown::new();
    let pacing = Arc::new(AtomicBool::new(false));
    while let Some((stream, open)) = handed.recv().await {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
            continue;
        };
        serve_connection(&gateway, &graceful, stream, open);
        if !pacing.swap(true, Ordering::Relaxed) {
            tokio::spawn(pace(load.clone(), pacing.clone()));
        }
    }
    let open = graceful.count();
    let draining = graceful.shutdown();
    tokio::pin!(draining);
    let grace = gateway.settings().shutdown_grace;
    if tokio::time::timeout(grace, &mut draining).await.is_ok() {
        return 0;
    }
    // The grace period ran out: every call and stream still running ends with a
    // `gateway_shutdown` error in its protocol's shape, given a moment to be written.
    gateway.stopping.now();
    let _ = tokio::time::timeout(FAREWELL, &mut draining).await;
    open
}

/// How far ahead [`pace`] keeps a timer due.
const PACE: std::time::Duration = std::time::Duration::from_millis(50);

/// Keeps a timer due within [`PACE`] while the lane has connections open, and ends (clearing
/// `pacing`) once it has none. tokio wakes a runtime's reactor (an eventfd write, and one more
/// turn of epoll) whenever a timer is set earlier than the earliest one it last parked with,
/// even from the runtime's own thread, where nothing needs waking. A call sets timers of its own
/// (its deadlines; hyper's header-read timeout for the connection's next request), and often
/// each is the earliest: 0.21 such writes per call under load, one per call made one at a time
/// (docs/benchmarks.md). With a timer always due sooner, none is; the price is 20 wakes a second
/// of a lane that serves.
async fn pace(load: Arc<AtomicUsize>, pacing: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(PACE).await;
        if load.load(Ordering::Relaxed) == 0 {
            pacing.store(false, Ordering::Relaxed);
            return;
        }
    }
}

/// How long calls and streams still running at the end of the grace period get to write their
/// `gateway_shutdown` error.
const FAREWELL: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves one client connection on this lane: HTTP/1.1 with a header-read timeout, each
/// request handed to the routes.
fn serve_connection(
    gateway: &Arc<Gateway>,
    graceful: &GracefulShutdown,
    stream: tokio::net::TcpStream,
    open: OpenConnection,
) {
    // Each connection takes the settings in effect when it arrives.
    let settings = gateway.settings();
    let gateway = gateway.clone();
    // Boxed: hyper keeps room for one in-flight request's future for as long as the connection
    // lives; a box makes that room a pointer, so a streamed answer does not hold the finished
    // handler's ~9 KB (docs/benchmarks.md).
    let service =
        service_fn(move |request| Box::pin(crate::routes::handle(gateway.clone(), request)));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .serve_connection(TokioIo::new(stream), service);
    let connection = SelfWakesInPlace::new(graceful.watch(connection));
    tokio::spawn(async move {
        let _ = connection.await;
        drop(open);
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn loads(lanes: &Lanes) -> Vec<usize> {
        (lanes.lanes.iter())
            .map(|lane| lane.load.load(Ordering::Relaxed))
            .collect()
    }

    /// Waits (a bounded while) until the lanes hold `expected` connections.
    async fn loads_become(lanes: &Lanes, expected: &[usize]) {
        for _ in 0..500 {
            if loads(lanes) == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(loads(lanes), expected);
    }

    async fn health(client: &mut TcpStream) -> String {
        client
            .write_all(b"GET /health/live HTTP/1.1\r\nhost: gateway\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let read = client.read(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer[..read]).into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacemaker_ticks_while_the_lane_has_connections_and_then_ends() {
        let load = Arc::new(AtomicUsize::new(1));
        let pacing = Arc::new(AtomicBool::new(true));
        let pacemaker = tokio::spawn(pace(load.clone(), pacing.clone()));
        tokio::time::sleep(PACE * 10).await;
        assert!(
            !pacemaker.is_finished(),
            "a lane with a connection keeps a timer due"
        );
        assert!(pacing.load(Ordering::Relaxed));
        load.store(0, Ordering::Relaxed);
        tokio::time::sleep(PACE * 2).await;
        assert!(pacemaker.is_finished(), "an idle lane is woken by nothing");
        assert!(
            !pacing.load(Ordering::Relaxed),
            "the next connection starts another"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_go_to_the_lane_with_fewest_and_are_counted_out_when_they_close() {
        let text = "[upstreams.a]\nbase_url = \"http://127.0.0.1:9/v1\"\n[models.m]\ntargets = [\"a\"]\n[health_check]\nmode = \"off\"\n";
        let config = hourglass_config::Config::from_toml(text, "t.toml", &|_| None).unwrap();
        let engine = hourglass_engine::Engine::new(config, HashMap::new()).unwrap();
        let gateway = Arc::new(Gateway::new(engine));
        let lanes = Lanes::start(&gateway, 2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..4 {
            let client = TcpStream::connect(addr).await.unwrap();
            let (served, _) = listener.accept().await.unwrap();
            lanes.hand(served, OpenConnection::admit(&gateway, 100).unwrap());
            clients.push(client);
        }
        assert_eq!(loads(&lanes), [2, 2]);
        for client in &mut clients {
            let answer = health(client).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }

        // Handed in turn, lane 0 took the first and third: closing both empties it, and the
        // next connection goes there.
        drop(clients.remove(2));
        drop(clients.remove(0));
        loads_become(&lanes, &[0, 2]).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (served, _) = listener.accept().await.unwrap();
        lanes.hand(served, OpenConnection::admit(&gateway, 100).unwrap());
        assert_eq!(loads(&lanes), [1, 2]);
        assert!(health(&mut client).await.starts_with("HTTP/1.1 200"));

        // Idle keep-alive connections close at once when the lanes drain.
        assert_eq!(lanes.drain().await, 0);
        let mut rest = [0u8; 16];
        assert_eq!(
            client.read(&mut rest).await.unwrap(),
            0,
            "closed by the gateway"
        );
    }
}
