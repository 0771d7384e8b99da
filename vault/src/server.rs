//! Starting and stopping the service: [`serve`] inside a tokio runtime, [`BackgroundServer`] on a
//! runtime of its own (tests, `regent quickstart`), [`run_until_signal`] for `regent vault serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::IntCounter;
use regent_store::Head;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::error::VaultError;
use crate::metrics::{self, Metrics};
use crate::service::{self, App};
use crate::storage::postgres::PgStorage;
use crate::storage::sled::{Committer, SledStorage};
use crate::storage::{Backend, Storage as _};
use crate::token::AdminKey;
use regent_protocol::transparency::NoteSigner;

/// How long open connections get to finish their requests at shutdown before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// At most this many connections queued in the listener when the service stops are still taken
/// and answered (tokio's listen backlog).
const LISTEN_QUEUE: usize = 1024;
/// At a stop, how long connections accepted a moment ago get to have their first request read
/// before they are asked to finish (see [`Unread`]).
const SETTLE: Duration = Duration::from_millis(250);
/// A client must send its request headers (and finish a TLS handshake) within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The certificate chain and private key (PEM files) for HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to run the service.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Holds `admin.token` and the service's log (`log/`); created (mode 0700) if missing.
    pub data_dir: PathBuf,
    /// Port 0 picks a free port; [`ServerInfo::local_addr`] says which.
    pub listen: SocketAddr,
    /// HTTPS when set.
    pub tls: Option<TlsFiles>,
    /// The URL credentials name as `IdMgmtRestEndpoint`. When unset, a download names the address the
    /// admin reached the service at (its Host header), which is right unless a proxy or NAT sits in between.
    pub public_url: Option<String>,
    /// Registrations are written by the group committer (the default: concurrent registrations share
    /// one append and one flush). Off, each registration appends and flushes on its own; that is for
    /// measuring the difference only.
    pub group_commit: bool,
    /// `postgres://...`: the log and the state in that PostgreSQL database, shared with every other
    /// process given the same URL and admin token; the data directory then holds only the token.
    /// Unset: sled under the data directory.
    pub database_url: Option<secrecy::SecretString>,
    /// How often a PostgreSQL vault forgets nonces older than the clock-skew window needs (a minute;
    /// shorter only in tests).
    #[doc(hidden)]
    pub prune_every: Duration,
    /// Who an export of the log (`GET /v1/log`) names as its `writer`: the binary gives its build.
    pub writer: String,
    /// The records a report brings are kept (the default). Off, reports are walked and anchored as
    /// ever but nothing is kept and no fleet state moves: for measuring what keeping costs only.
    #[doc(hidden)]
    pub keep_records: bool,
    /// Accepted heads are leaves of the transparency log (the default). Off, they are anchored as
    /// ever but not logged (no leaf, no proof in the answer): for measuring what the tree costs only.
    #[doc(hidden)]
    pub log_heads: bool,
}

/// The `writer` of an export when the embedder names none.
const DEFAULT_WRITER: &str = concat!("regent-vault ", env!("CARGO_PKG_VERSION"));

impl ServeConfig {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.into(),
            listen,
            tls: None,
            public_url: None,
            group_commit: true,
            database_url: None,
            prune_every: Duration::from_secs(60),
            writer: DEFAULT_WRITER.to_string(),
            keep_records: true,
            log_heads: true,
        }
    }

    /// Names the build that serves, as an export's header says it (`regent 0.1.0 (...)`).
    pub fn with_writer(mut self, writer: impl Into<String>) -> ServeConfig {
        self.writer = writer.into();
        self
    }

    pub fn with_tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> ServeConfig {
        self.tls = Some(TlsFiles { cert: cert.into(), key: key.into() });
        self
    }

    pub fn with_database_url(mut self, url: impl Into<String>) -> ServeConfig {
        self.database_url = Some(secrecy::SecretString::from(url.into()));
        self
    }

    pub fn with_public_url(mut self, url: impl Into<String>) -> ServeConfig {
        self.public_url = Some(url.into());
        self
    }
}

/// Where a started service is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub local_addr: SocketAddr,
    /// `http://ADDR` or `https://ADDR`; an unspecified address (0.0.0.0) is shown as loopback.
    pub url: String,
    pub admin_token_path: PathBuf,
    /// True when this start created the token (first start on this data directory).
    pub admin_token_created: bool,
}

/// A service running on the caller's tokio runtime. Dropping it stops the service too (without
/// waiting); [`RunningServer::shutdown`] stops it and waits until its log is closed.
#[derive(Debug)]
pub struct RunningServer {
    info: ServerInfo,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// Weak: the storage closes when the service stops, whoever holds this.
    app: Weak<App>,
}

impl RunningServer {
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.info.local_addr
    }

    pub fn url(&self) -> &str {
        &self.info.url
    }

    /// The head of the service's own log (position and hash of its last record), while it runs:
    /// what a monitor (or a test) compares to see whether a request wrote anything.
    pub async fn log_head(&self) -> Option<Head> {
        let app = self.app.upgrade()?;
        app.storage.head().await.ok()
    }

    /// Stops accepting, lets open requests finish (up to a few seconds), then closes the log.
    pub async fn shutdown(mut self) -> Result<(), VaultError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(|e| VaultError::Stopped(e.to_string()))
    }
}

struct Opened {
    storage: SledStorage,
    committer: Committer,
    admin: AdminKey,
    token_path: PathBuf,
    token_created: bool,
    signer: NoteSigner,
}

/// Opens (or creates) the data directory: the admin token and the log, folded into the state.
fn open_sled(data_dir: &Path, group_commit: bool, appended: IntCounter) -> Result<Opened, VaultError> {
    regent_secrets::create_private_dir(data_dir)
        .map_err(|source| VaultError::DataDir { path: data_dir.to_path_buf(), source })?;
    let (admin, token_path, token_created) = crate::token::load_or_create(data_dir)?;
    let signer = crate::transparency::load_or_create(data_dir)?;
    let (storage, committer) = SledStorage::open(data_dir, group_commit, appended)?;
    Ok(Opened { storage, committer, admin, token_path, token_created, signer })
}

/// Binds, opens the data directory (creating `admin.token` on first start) and starts serving.
/// Returns once the service accepts connections.
pub async fn serve(config: ServeConfig) -> Result<RunningServer, VaultError> {
    if let Some(url) = &config.public_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(VaultError::BadPublicUrl { url: url.clone() });
    }
    let tls = match &config.tls {
        Some(files) => Some(TlsAcceptor::from(Arc::new(crate::tls::server_config(&files.cert, &files.key)?))),
        None => None,
    };
    let with_tls = tls.is_some();
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| VaultError::Bind { addr: config.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| VaultError::Bind { addr: config.listen, source })?;
    let metrics = Arc::new(Metrics::new()?);
    let appended = metrics.events_appended();
    let (storage, admin, token_path, token_created, signer, committer) = match &config.database_url {
        None => {
            // Opening the store may wait for another process's lock and reads the whole log: blocking work.
            let data_dir = config.data_dir.clone();
            let group_commit = config.group_commit;
            let opened = tokio::task::spawn_blocking(move || open_sled(&data_dir, group_commit, appended))
                .await
                .map_err(|e| VaultError::Stopped(e.to_string()))??;
            let Opened { storage, committer, admin, token_path, token_created, signer } = opened;
            (Backend::Sled(storage), admin, token_path, token_created, signer, Some(committer))
        }
        Some(url) => {
            use secrecy::ExposeSecret as _;
            // The database first: a start it refuses leaves the data dir as it was (no new token).
            let prepared = PgStorage::prepare(url.expose_secret()).await?;
            let data_dir = config.data_dir.clone();
            let (admin, token_path, token_created, signer) = tokio::task::spawn_blocking(move || {
                regent_secrets::create_private_dir(&data_dir)
                    .map_err(|source| VaultError::DataDir { path: data_dir.to_path_buf(), source })?;
                let (admin, token_path, token_created) = crate::token::load_or_create(&data_dir)?;
                Ok::<_, VaultError>((admin, token_path, token_created, crate::transparency::load_or_create(&data_dir)?))
            })
            .await
            .map_err(|e| VaultError::Stopped(e.to_string()))??;
            let verifier = signer.verifier().to_string();
            let storage = prepared.bind(admin.digest(), &token_path, &verifier, appended, config.group_commit).await?;
            tokio::spawn(PgStorage::prune_nonces(storage.pool().clone(), config.prune_every));
            tokio::spawn(PgStorage::report_pool(storage.pool().clone(), metrics.pool_gauges()?));
            (Backend::Postgres(storage), admin, token_path, token_created, signer, None)
        }
    };
    let notary = crate::transparency::Notary::new(signer);
    let mut app = App::new(storage, admin, notary, config.public_url.clone(), with_tls, config.writer.clone());
    app.keep_records = config.keep_records;
    app.log_heads = config.log_heads;
    let app = Arc::new(app);
    let weak_app = Arc::downgrade(&app);
    app.set_bound(local_addr);
    let shown = crate::service::reachable(local_addr);
    let info = ServerInfo {
        local_addr,
        url: format!("{}://{shown}", if with_tls { "https" } else { "http" }),
        admin_token_path: token_path,
        admin_token_created: token_created,
    };
    tracing::info!(url = %info.url, data_dir = %config.data_dir.display(), "vault service listening");
    let committer = tokio::spawn(async move {
        if let Some(committer) = committer {
            committer.run().await;
        }
    });
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, tls, app, metrics, stopped, committer));
    Ok(RunningServer { info, stop: Some(stop), task, app: weak_app })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    metrics: Arc<Metrics>,
    mut stop: oneshot::Receiver<()>,
    committer: JoinHandle<()>,
) {
    let router = metrics::instrument(service::router(app.clone()), metrics);
    let graceful = GracefulShutdown::new();
    let unread = Arc::new(AtomicUsize::new(0));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // A send or a dropped sender both mean stop.
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                connection(&mut connections, &router, &graceful, &tls, &unread, tcp, peer);
            }
        }
    }
    // Connections the kernel completed before the stop wait in the listener's queue: closing it
    // would reset them unanswered, though their clients sent their requests. Each is taken and
    // answered (one request: keep-alive is off from here on). Only one that completes in the
    // moment between this and the close is still reset, as is any after it (refused).
    // Bounded: clients connecting as fast as they are taken must not hold the stop off.
    for _ in 0..LISTEN_QUEUE {
        let queued = std::future::poll_fn(|cx| match listener.poll_accept(cx) {
            Poll::Ready(Ok(accepted)) => Poll::Ready(Some(accepted)),
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Ready(None),
        });
        let Some((tcp, peer)) = queued.await else { break };
        connection(&mut connections, &router, &graceful, &tls, &unread, tcp, peer);
    }
    drop(listener);
    // hyper closes, unanswered, a connection that has read nothing yet when it is asked to shut down
    // gracefully, though its client may have sent its request already: wait (a little) until each
    // has started its first request or ended.
    let settled = tokio::time::Instant::now() + SETTLE;
    while unread.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the grace period are cut");
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    // The committer ends once the last handle on the app (and so on its queue) is gone; then the log
    // is closed and the data directory free for another start.
    drop(router);
    // The database's connections close with the service (its background tasks end with them).
    app.storage.close().await;
    drop(app);
    if tokio::time::timeout(SHUTDOWN_GRACE, committer).await.is_err() {
        tracing::warn!("registrations still being written after the grace period");
    }
    tracing::info!("vault service stopped");
}

/// Counts a connection in `unread` until its first request starts (or the connection ends).
struct Unread {
    count: Arc<AtomicUsize>,
    read: AtomicBool,
}

impl Unread {
    fn new(count: &Arc<AtomicUsize>) -> Unread {
        count.fetch_add(1, Ordering::SeqCst);
        Unread { count: count.clone(), read: AtomicBool::new(false) }
    }

    fn read(&self) {
        if !self.read.swap(true, Ordering::SeqCst) {
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        self.read();
    }
}

/// Serves one accepted connection (after its TLS handshake, for HTTPS) on a task of `connections`,
/// watched by `graceful`.
fn connection(
    connections: &mut JoinSet<()>,
    router: &axum::Router,
    graceful: &GracefulShutdown,
    tls: &Option<TlsAcceptor>,
    unread: &Arc<AtomicUsize>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let unread = Arc::new(Unread::new(unread));
    let service = router.clone().map_request(move |mut request: Request<hyper::body::Incoming>| {
        unread.read();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let service = TowerToHyperService::new(service);
    let watcher = graceful.watcher();
    let tls = tls.clone();
    connections.spawn(async move {
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
        match tls {
            None => {
                let _ = watcher.watch(builder.serve_connection(TokioIo::new(tcp), service)).await;
            }
            Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            },
        }
    });
}

/// The service on a runtime of its own, for tests and for `regent quickstart`. Start and stop it from
/// synchronous code (not from inside a tokio runtime). Dropping it shuts it down.
#[derive(Debug)]
pub struct BackgroundServer {
    runtime: Option<tokio::runtime::Runtime>,
    server: Option<RunningServer>,
    info: ServerInfo,
}

impl BackgroundServer {
    pub fn start(config: ServeConfig) -> Result<BackgroundServer, VaultError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("regent-vault")
            .enable_all()
            .build()
            .map_err(VaultError::Runtime)?;
        // The runtime's worker threads run the service; nothing needs to sit in block_on.
        let server = runtime.block_on(serve(config))?;
        let info = server.info().clone();
        Ok(BackgroundServer { runtime: Some(runtime), server: Some(server), info })
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn url(&self) -> &str {
        &self.info.url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.info.local_addr
    }

    pub fn admin_token_path(&self) -> &Path {
        &self.info.admin_token_path
    }

    /// See [`RunningServer::log_head`].
    pub fn log_head(&self) -> Option<Head> {
        let (runtime, server) = (self.runtime.as_ref()?, self.server.as_ref()?);
        runtime.block_on(server.log_head())
    }

    /// Stops the service and waits until its log is closed (the data directory can then be opened again).
    pub fn shutdown(mut self) -> Result<(), VaultError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), VaultError> {
        let (Some(runtime), Some(server)) = (self.runtime.take(), self.server.take()) else {
            return Ok(());
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside another runtime, blocking here would panic: dropping the server stops it, and
            // the runtime winds down in the background (the log closes a moment later).
            drop(server);
            runtime.shutdown_background();
            return Ok(());
        }
        let result = runtime.block_on(server.shutdown());
        // Waits for writes in flight on the blocking pool, so the log is closed when this returns.
        runtime.shutdown_timeout(SHUTDOWN_GRACE);
        result
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "the vault service did not stop cleanly");
        }
    }
}

/// Runs the service until SIGINT or SIGTERM, then shuts it down cleanly: `regent vault serve`.
/// `on_ready` is called once it listens (print the address there).
pub fn run_until_signal(config: ServeConfig, on_ready: impl FnOnce(&ServerInfo)) -> Result<(), VaultError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("regent-vault")
        .enable_all()
        .build()
        .map_err(VaultError::Runtime)?;
    runtime.block_on(async move {
        // Watched before it says it is ready: a service manager may stop it the moment it is, and
        // until then either signal would kill it without closing its log.
        use tokio::signal::unix::{SignalKind, signal};
        let watch = |kind, name| signal(kind).map_err(|e| VaultError::Stopped(format!("cannot watch for {name}: {e}")));
        let mut terminate = watch(SignalKind::terminate(), "SIGTERM")?;
        let mut interrupt = watch(SignalKind::interrupt(), "SIGINT")?;
        let server = serve(config).await?;
        on_ready(server.info());
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping on signal");
        server.shutdown().await
    })
}
