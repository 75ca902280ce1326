//! The serving threads ("lanes"): single-threaded runtimes, one per CPU unless `server.threads`
//! says otherwise, each serving client connections from the first byte to the last, with the
//! handler and the upstream HTTP/1.1 connection a call drives on the same thread. The first lane
//! accepts for all of them.
//!
//! # Why not tokio's multi-threaded scheduler
//! A proxied call is one task that mostly waits on sockets. Under tokio's work-stealing
//! scheduler that task and its data move between cores, and idle workers are woken to steal it.
//! Measured on the project's 2-core machine, serving this way took a call from 34 to 29 µs of
//! CPU and let 16-18 % more calls through (docs/benchmarks-log.md, issue 19's step 9). nginx serves
//! the same way: one event loop per core. The price is balance: a connection stays on its lane,
//! so the accepting lane hands a new connection to another when that one has fewer open;
//! otherwise it serves it itself, with no other thread woken.
//!
//! # Why one lane accepts
//! When every lane waited on the listening socket, the kernel woke them all for each new
//! connection, one took it and the rest woke for nothing: on a 2-core host that cost a new
//! connection's call 0.05-0.07 ms one at a time (issue 19's step 16). A socket per lane
//! (`SO_REUSEPORT`) spreads connections by a hash of their addresses, blind to load, and left
//! the 10,000-stream flood's peak higher (step 15). So one lane accepts, and hands over by load;
//! accepting is a small part of a connection's cost, and a busy lane accepts between turns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{mpsc, oneshot, watch};

use hourglass_engine::{LinesAfterPoll, clock};

use crate::gateway::{Connected, Gateway};
use crate::head_timer::{HeadTimers, LaneTimer};
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

/// What every lane knows of each lane: where to hand it a connection, and how many it has open.
struct Peer {
    incoming: mpsc::UnboundedSender<Handed>,
    load: Arc<AtomicUsize>,
}

/// The lane a connection accepted on lane `here` is served on: `here` while no lane has fewer
/// open (no hand-over, so no wake of another thread), else the one with the fewest.
fn lane_for(loads: &[usize], here: usize) -> usize {
    let fewest = (0..loads.len()).min_by_key(|&i| loads[i]).unwrap_or(here);
    if loads.get(here).is_some_and(|&mine| mine <= loads[fewest]) {
        here
    } else {
        fewest
    }
}

/// The serving threads of one `serve`.
pub struct Lanes {
    /// The gateway they serve: its grace period and the signal that ends it.
    gateway: Arc<Gateway>,
    /// Each lane's load: what is still open when the grace period ends.
    peers: Arc<[Peer]>,
    /// Each lane says when it has drained (every connection ended, or the farewell passed).
    drained: Vec<oneshot::Receiver<()>>,
    /// Tells the first lane to stop accepting, and every lane to drain.
    stop: watch::Sender<bool>,
    /// Dropped once every lane has drained: a lane keeps its runtime (and whatever runs on it,
    /// such as an HTTP/2 connection other lanes' calls borrowed) until then.
    release: watch::Sender<()>,
}

impl Lanes {
    /// Starts `count` serving threads (at least one) for `gateway`, the first accepting on
    /// `listener` for all. Fails only when the system cannot start a thread or a runtime, or
    /// cannot hand the listening socket to the first thread's runtime.
    pub fn start(
        gateway: &Arc<Gateway>,
        count: usize,
        listener: &std::net::TcpListener,
    ) -> std::io::Result<Lanes> {
        let count = count.max(1);
        let (release, released) = watch::channel(());
        let (stop, stopped) = watch::channel(false);
        let (mut peers, mut receivers) = (Vec::with_capacity(count), Vec::with_capacity(count));
        for _ in 0..count {
            let (incoming, handed) = mpsc::unbounded_channel();
            peers.push(Peer {
                incoming,
                load: Arc::new(AtomicUsize::new(0)),
            });
            receivers.push(handed);
        }
        let peers: Arc<[Peer]> = peers.into();
        let mut drained = Vec::with_capacity(count);
        for (index, handed) in receivers.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (done, lane_drained) = oneshot::channel();
            let lane = LaneRun {
                gateway: gateway.clone(),
                index,
                peers: peers.clone(),
                handed,
                stop: stopped.clone(),
            };
            // Registered with the first lane's reactor here, so a failure fails the start.
            let listener = match index {
                0 => {
                    let _entered = runtime.enter();
                    Some(tokio::net::TcpListener::from_std(listener.try_clone()?)?)
                }
                _ => None,
            };
            let mut released = released.clone();
            std::thread::Builder::new()
                .name(format!("hourglass-lane-{index}"))
                .spawn(move || {
                    runtime.block_on(lane.run(listener));
                    let _ = done.send(());
                    runtime.block_on(async move { while released.changed().await.is_ok() {} });
                })?;
            drained.push(lane_drained);
        }
        Ok(Lanes {
            gateway: gateway.clone(),
            peers,
            drained,
            stop,
            release,
        })
    }

    /// Stops accepting: every lane serves what it holds, and its calls get
    /// `server.shutdown_grace` to finish; then every call and stream still running, on every lane
    /// at once, ends with a `gateway_shutdown` error. Returns how many connections were still
    /// open when the grace period ended, over all lanes (0 when every one ended within it).
    ///
    /// The grace period has one clock, here: were each lane to keep its own, the first to run out
    /// would end the other lanes' calls before their own clocks did, and those lanes would report
    /// their connections as drained in time.
    pub async fn drain(self) -> usize {
        let _ = self.stop.send(true);
        let grace = self.gateway.settings().shutdown_grace;
        let drained = self.drained;
        let every_lane = async move {
            for lane in drained {
                let _ = lane.await;
            }
        };
        tokio::pin!(every_lane);
        let mut open = 0;
        if tokio::time::timeout(grace, &mut every_lane).await.is_err() {
            // Counted before anything is told, so a call ending on the news is still counted.
            open = (self.peers.iter())
                .map(|peer| peer.load.load(Ordering::Relaxed))
                .sum();
            self.gateway.stopping.now();
            every_lane.await;
        }
        drop(self.release);
        open
    }
}

/// One lane, as its own thread runs it.
struct LaneRun {
    gateway: Arc<Gateway>,
    index: usize,
    peers: Arc<[Peer]>,
    /// Connections other lanes accepted and handed here.
    handed: mpsc::UnboundedReceiver<Handed>,
    stop: watch::Receiver<bool>,
}

impl LaneRun {
    /// Accepts on `listener` (the first lane; the others have none) and serves what it accepts
    /// or is handed until told to stop, then drains.
    async fn run(mut self, listener: Option<tokio::net::TcpListener>) {
        let gateway = self.gateway.clone();
        let graceful = GracefulShutdown::new();
        let pacing = Arc::new(AtomicBool::new(false));
        let timer = LaneTimer::default();
        let accept = async |listener: &Option<tokio::net::TcpListener>| match listener {
            Some(listener) => listener.accept().await,
            None => std::future::pending().await,
        };
        loop {
            let served = tokio::select! {
                accepted = accept(&listener) => match accepted {
                    Ok((stream, _)) => self.accepted(stream),
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        None
                    }
                },
                Some((stream, open)) = self.handed.recv() => {
                    tokio::net::TcpStream::from_std(stream).ok().map(|stream| (stream, open))
                }
                _ = self.stop.changed() => break,
            };
            if let Some((stream, open)) = served {
                serve_connection(&gateway, &graceful, &timer, stream, open);
                if !pacing.swap(true, Ordering::Relaxed) {
                    let load = self.peers[self.index].load.clone();
                    tokio::spawn(pace(load, pacing.clone(), timer.0.clone()));
                }
            }
        }
        drop(listener);
        // What other lanes handed over just before the stop is served (and drained) too.
        self.handed.close();
        while let Ok((stream, open)) = self.handed.try_recv() {
            if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                serve_connection(&gateway, &graceful, &timer, stream, open);
            }
        }
        let draining = graceful.shutdown();
        tokio::pin!(draining);
        // Until every connection here has ended, or the grace period has run out: `Lanes::drain`
        // keeps its clock, for every lane at once. Lanes dropped without a drain (a `serve`
        // future cancelled) told no one to stop: then each lane keeps a clock of its own.
        let abandoned = !*self.stop.borrow();
        let own_clock = async {
            if abandoned {
                tokio::time::sleep(gateway.settings().shutdown_grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = &mut draining => return,
            () = gateway.stopping.arrived() => {}
            () = own_clock => gateway.stopping.now(),
        }
        // Every call and stream still running ends with a `gateway_shutdown` error in its
        // protocol's shape, given a moment to be written.
        let _ = tokio::time::timeout(FAREWELL, &mut draining).await;
    }

    /// A connection this lane accepted: counted in (past `server.max_connections` refused),
    /// then served here, or handed to the lane with the fewest open when that is another.
    fn accepted(
        &self,
        stream: tokio::net::TcpStream,
    ) -> Option<(tokio::net::TcpStream, OpenConnection)> {
        let _ = stream.set_nodelay(true);
        let max = self.gateway.settings().max_connections;
        let Some(mut open) = OpenConnection::admit(&self.gateway, max) else {
            crate::server::refuse(stream, &self.gateway, max);
            return None;
        };
        let loads: Vec<usize> = (self.peers.iter())
            .map(|peer| peer.load.load(Ordering::Relaxed))
            .collect();
        let lane = &self.peers[lane_for(&loads, self.index)];
        lane.load.fetch_add(1, Ordering::Relaxed);
        open.lane_load = Some(lane.load.clone());
        if std::ptr::eq(lane, &self.peers[self.index]) {
            return Some((stream, open));
        }
        // Taken out of this runtime's reactor: the lane registers it with its own.
        let stream = stream.into_std().ok()?;
        let Err(mpsc::error::SendError((stream, mut open))) = lane.incoming.send((stream, open))
        else {
            return None;
        };
        // That lane has stopped: this one serves it, and drains it with the rest.
        let here = &self.peers[self.index].load;
        lane.load.fetch_sub(1, Ordering::Relaxed);
        here.fetch_add(1, Ordering::Relaxed);
        open.lane_load = Some(here.clone());
        tokio::net::TcpStream::from_std(stream)
            .ok()
            .map(|stream| (stream, open))
    }
}

/// How far ahead [`pace`] keeps a timer due.
const PACE: std::time::Duration = std::time::Duration::from_millis(50);

/// Keeps a timer due within [`PACE`] while the lane has connections open, and ends (clearing
/// `pacing`) once it has none. tokio wakes a runtime's reactor (an eventfd write, and one more
/// turn of epoll) whenever a timer is set earlier than the earliest one it last parked with,
/// even from the runtime's own thread, where nothing needs waking. A call sets timers of its own
/// (its deadlines), and often each is the earliest: 0.21 such writes per call under load, one
/// per call made one at a time (docs/benchmarks-log.md). With a timer always due sooner, none is;
/// the price is 20 wakes a second of a lane that serves. Each tick also fires the lane's
/// header-read timers that are due (see `head_timer`).
async fn pace(load: Arc<AtomicUsize>, pacing: Arc<AtomicBool>, heads: Arc<HeadTimers>) {
    loop {
        tokio::time::sleep(PACE).await;
        heads.fire_due(tokio::time::Instant::now());
        if load.load(Ordering::Relaxed) == 0 {
            pacing.store(false, Ordering::Relaxed);
            return;
        }
    }
}

/// How long calls and streams still running at the end of the grace period get to write their
/// `gateway_shutdown` error.
const FAREWELL: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves one client connection on this lane: HTTP/1.1 with a header-read timeout (on the
/// lane's `timer`), each request handed to the routes.
fn serve_connection(
    gateway: &Arc<Gateway>,
    graceful: &GracefulShutdown,
    timer: &LaneTimer,
    stream: tokio::net::TcpStream,
    open: OpenConnection,
) {
    // Each connection takes the settings in effect when it arrives.
    let connected = Arc::new(Connected::new(gateway.clone()));
    let engine = connected.engine();
    let settings = &engine.config().server;
    // Boxed: hyper keeps room for one in-flight request's future for as long as the connection
    // lives; a box makes that room a pointer, so a streamed answer does not hold the finished
    // handler's ~3.7 KB (docs/benchmarks-log.md). Made in its box, not moved there (`made_in_box`).
    let service = service_fn(move |request| {
        made_in_box(|| crate::routes::handle(connected.clone(), request))
    });
    let connection = http1::Builder::new()
        .timer(timer.clone())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = SelfWakesInPlace::new(graceful.watch(connection));
    tokio::spawn(async move {
        // The log lines of calls that end during a poll are written when it returns, after
        // hyper has written their answers; everything the poll does, the lines too, reads the
        // time once (`clock`).
        let _ = std::future::poll_fn(|cx| {
            let _turn = clock::Turn::begin();
            let _lines = LinesAfterPoll::begin();
            Pin::new(&mut connection).poll(cx)
        })
        .await;
        drop(open);
    });
}

/// `make()`'s value, made in a box allocated first. `Box::pin(make())` makes the value on the
/// stack and copies all of it into the box: for the handler's future, 9,928 bytes a request, of
/// which only its arguments (272 bytes) were written — that copy was 1.4 % of a lane's time at
/// full load. Allocated first, the compiler writes the value straight into the box.
fn made_in_box<T>(make: impl FnOnce() -> T) -> Pin<Box<T>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    fn loads(lanes: &Lanes) -> Vec<usize> {
        (lanes.peers.iter())
            .map(|peer| peer.load.load(Ordering::Relaxed))
            .collect()
    }

    /// Waits (a bounded while) until the lanes' loads satisfy `done`.
    async fn loads_become(lanes: &Lanes, done: impl Fn(&[usize]) -> bool) {
        for _ in 0..500 {
            if done(&loads(lanes)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the lanes hold {:?}", loads(lanes));
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
        let heads = Arc::new(HeadTimers::default());
        let pacemaker = tokio::spawn(pace(load.clone(), pacing.clone(), heads.clone()));
        // A header-read timer of the lane is fired on the first tick after its deadline.
        let timer = LaneTimer(heads);
        let deadline = tokio::time::Instant::now() + PACE * 5 / 2;
        let mut head = hyper::rt::Timer::sleep_until(&timer, deadline.into_std());
        assert!(futures_poll_once(head.as_mut()).is_pending());
        tokio::time::sleep(PACE * 2).await;
        assert!(
            futures_poll_once(head.as_mut()).is_pending(),
            "not before its deadline"
        );
        // Half a tick past the tick that follows the deadline: whichever task runs first then.
        tokio::time::sleep(PACE * 3 / 2).await;
        assert!(
            futures_poll_once(head.as_mut()).is_ready(),
            "fired by the tick after it"
        );
        tokio::time::sleep(PACE * 7).await;
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

    /// Polls `future` once with a waker that does nothing.
    fn futures_poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> std::task::Poll<F::Output> {
        future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn a_lane_keeps_what_it_accepts_unless_another_has_fewer_open() {
        assert_eq!(lane_for(&[0, 0], 1), 1, "no hand-over on a tie");
        assert_eq!(lane_for(&[3, 2, 2], 2), 2);
        assert_eq!(lane_for(&[1, 0], 0), 1, "to the one with fewer");
        assert_eq!(lane_for(&[4, 2, 1], 1), 2);
        assert_eq!(lane_for(&[0], 0), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_accept_spread_connections_and_count_them_out_when_they_close() {
        let text = "[upstreams.a]\nbase_url = \"http://127.0.0.1:9/v1\"\n[models.m]\ntargets = [\"a\"]\n[health_check]\nmode = \"off\"\n";
        let config = hourglass_config::Config::from_toml(text, "t.toml", &|_| None).unwrap();
        let engine = hourglass_engine::Engine::new(config, HashMap::new()).unwrap();
        let gateway = Arc::new(Gateway::new(engine));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let lanes = Lanes::start(&gateway, 2, &listener).unwrap();
        // One at a time, each answered before the next: the first lane accepts each, and it
        // goes to the one with fewer open.
        let mut clients = Vec::new();
        for n in 1..=4 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let answer = health(&mut client).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            clients.push(client);
            let spread = loads(&lanes);
            assert_eq!(spread.iter().sum::<usize>(), n, "{spread:?}");
            assert!(
                spread.iter().all(|&l| l == n / 2 || l == n.div_ceil(2)),
                "{spread:?}"
            );
        }

        // Closed connections are counted out.
        drop(clients.drain(..3));
        loads_become(&lanes, |l| l.iter().sum::<usize>() == 1).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        assert!(health(&mut client).await.starts_with("HTTP/1.1 200"));
        assert_eq!(loads(&lanes), [1, 1], "the new one went to the empty lane");

        // Idle keep-alive connections close at once when the lanes drain, and nothing more is
        // accepted.
        drop(listener);
        assert_eq!(lanes.drain().await, 0);
        let mut rest = [0u8; 16];
        assert_eq!(
            client.read(&mut rest).await.unwrap(),
            0,
            "closed by the gateway"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listening socket closed"
        );
    }

    /// `lanes` serving threads for a gateway whose one upstream takes requests and never
    /// answers, with `shutdown_grace = 200ms`, and `calls` calls in flight on it (one per lane
    /// while there are lanes enough). Returns the lanes, the clients and the task holding the
    /// upstream's connections.
    async fn calls_waiting_on_a_silent_upstream(
        lanes: usize,
        calls: usize,
    ) -> (Lanes, Vec<TcpStream>, tokio::task::JoinHandle<()>) {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = silent.local_addr().unwrap();
        let waiting = Arc::new(AtomicUsize::new(0));
        let held = tokio::spawn({
            let waiting = waiting.clone();
            async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = silent.accept().await {
                    held.push(stream);
                    waiting.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let text = format!(
            "[server]\nshutdown_grace = \"200ms\"\n[upstreams.a]\nbase_url = \"http://{upstream}/v1\"\n[models.m]\ntargets = [\"a\"]\n[health_check]\nmode = \"off\"\n"
        );
        let config = hourglass_config::Config::from_toml(&text, "t.toml", &|_| None).unwrap();
        let engine = hourglass_engine::Engine::new(config, HashMap::new()).unwrap();
        let gateway = Arc::new(Gateway::new(engine));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let started = Lanes::start(&gateway, lanes, &listener).unwrap();
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let mut clients = Vec::new();
        for _ in 0..calls {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let request = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            client.write_all(request.as_bytes()).await.unwrap();
            clients.push(client);
            // Each on a lane of its own: a lane hands a connection to one with fewer open.
            let n = clients.len();
            loads_become(&started, |l| l.iter().sum::<usize>() == n).await;
        }
        // Every call is in flight, waiting on the upstream.
        for _ in 0..500 {
            if waiting.load(Ordering::Relaxed) == calls {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(waiting.load(Ordering::Relaxed), calls);
        (started, clients, held)
    }

    /// Each client's whole answer: a 503 `gateway_shutdown`.
    async fn every_one_ends_with_gateway_shutdown(clients: Vec<TcpStream>) {
        for mut client in clients {
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(answer.contains("gateway_shutdown"), "{answer}");
        }
    }

    /// Found as a flaky test: each lane kept its own grace clock, so the first to run out ended
    /// the other lanes' calls before their clocks did, and those lanes reported their
    /// connections as drained in time (1 of 2 open). One clock now ends the grace period for
    /// every lane, and what is open is counted before any call hears of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_grace_period_ends_on_every_lane_at_once_and_counts_every_call_still_running() {
        const LANES: usize = 8;
        let (lanes, clients, held) = calls_waiting_on_a_silent_upstream(LANES, LANES).await;
        assert_eq!(loads(&lanes), [1; LANES]);
        let still_open = lanes.drain().await;
        assert_eq!(
            still_open, LANES,
            "every call was running when the grace ended"
        );
        every_one_ends_with_gateway_shutdown(clients).await;
        held.abort();
    }

    /// Lanes dropped without a drain (a `serve` future cancelled) still end their calls after
    /// the grace period, each on its own clock, rather than serving them for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_dropped_without_a_drain_end_their_calls_after_the_grace_period() {
        let (lanes, clients, held) = calls_waiting_on_a_silent_upstream(2, 2).await;
        let dropped = tokio::time::Instant::now();
        drop(lanes);
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            every_one_ends_with_gateway_shutdown(clients),
        )
        .await;
        assert!(
            ended.is_ok(),
            "the calls were still served 5 s after the drop"
        );
        assert!(
            dropped.elapsed() >= Duration::from_millis(200),
            "not before the grace period"
        );
        held.abort();
    }
}
