//! What the server's tests share: a database per test (SQLite, and PostgreSQL when
//! `TWILIO_TEST_POSTGRES_URL` is set), the server started in-process, and a client for it.
//!
//! Every network step is bounded by [`LIMIT`]; nothing is timed.

use std::{future::Future, io::Write as _, net::SocketAddr, sync::Once, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_twilio::BoxError;
use tower_twilio_example_server::{
    Config, Startup,
    db::{Db, Location},
    twilio_presets::{self, Body, Preset, SignedRequest, Signer, apply_overrides, sign_request},
    webhook_log::LogSender,
};

/// The longest any one step (start, request, shutdown) may take.
pub(crate) const LIMIT: Duration = Duration::from_secs(30);

pub(crate) const ACCOUNT: &str = "AC11111111111111111111111111111111";
pub(crate) const TOKEN: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
/// The admin token of the in-process servers.
pub(crate) const ADMIN_TOKEN: &str = "test-admin-token-4f1d2c3b";

pub(crate) async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {LIMIT:?}"))
}

// ---- databases -------------------------------------------------------------------------------

/// A database of its own for one test, and a directory for the demo token file.
pub(crate) struct TestDb {
    pub(crate) location: Location,
    pub(crate) dir: tempfile::TempDir,
    /// For dropping the PostgreSQL database at the end: (admin URL, database name).
    pub(crate) postgres: Option<(String, String)>,
}

impl TestDb {
    pub(crate) fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhooks.db");
        Self {
            location: Location::parse(path.to_str().unwrap()).unwrap(),
            dir,
            postgres: None,
        }
    }

    /// A fresh database on the server `TWILIO_TEST_POSTGRES_URL` names, or `None` (and a line
    /// on standard error, once) when it is not set outside CI: only a run with
    /// `--include-ignored` gets here without it (`build.rs` sets `skip_postgres`). Under `CI` a
    /// missing server is a failure.
    pub(crate) async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("TWILIO_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but TWILIO_TEST_POSTGRES_URL is not: .ci/run starts PostgreSQL"
            );
            static ONCE: Once = Once::new();
            ONCE.call_once(|| {
                // Written past the test harness's capture, so that it shows in a normal run.
                let _ = writeln!(
                    std::io::stderr(),
                    "server tests: skipping PostgreSQL (TWILIO_TEST_POSTGRES_URL is not set); SQLite only"
                );
            });
            return None;
        };
        sqlx::any::install_default_drivers();
        let name = format!("tower_twilio_test_{}", twilio_presets::random_hex(6));
        let admin = sqlx::AnyPool::connect(&admin_url)
            .await
            .expect("connect to TWILIO_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create a test database (the user needs CREATEDB)");
        admin.close().await;
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Some(Self {
            location: Location::parse(url.as_str()).unwrap(),
            dir: tempfile::tempdir().unwrap(),
            postgres: Some((admin_url, name)),
        })
    }

    pub(crate) fn config(&self) -> Config {
        let mut config = Config::new(self.location.clone());
        config.demo_token_file = self.dir.path().join(".twilio-demo-token");
        config.admin_token_file = self.dir.path().join(".twilio-admin-token");
        config.admin_token = Some(ADMIN_TOKEN.to_owned());
        config
    }

    pub(crate) fn config_with_account(&self) -> Config {
        let mut config = self.config();
        config.account = Some((ACCOUNT.to_owned(), TOKEN.to_owned()));
        config
    }

    pub(crate) async fn open(&self) -> Db {
        Db::open(&self.location).await.unwrap()
    }

    /// Runs `statements` on the database through a connection of its own, beside any server
    /// using it.
    pub(crate) async fn execute(&self, statements: &[&str]) {
        let url = match &self.location {
            Location::Sqlite(path) => format!("sqlite:{}", path.display()),
            Location::Postgres(url) => url.clone(),
        };
        execute(&url, statements).await;
    }

    pub(crate) async fn drop_database(self) {
        if let Some((admin_url, name)) = self.postgres
            && let Ok(admin) = sqlx::AnyPool::connect(&admin_url).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await;
            admin.close().await;
        }
    }
}

/// Runs `statements` on the database at the sqlx URL `url`, in order.
pub(crate) async fn execute(url: &str, statements: &[&str]) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    for statement in statements {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    pool.close().await;
}

/// Runs `scenario` against SQLite and against PostgreSQL (when configured).
macro_rules! on_both_databases {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::support::TestDb::sqlite()).await;
            }

            #[tokio::test]
            #[cfg_attr(
                skip_postgres,
                ignore = "needs PostgreSQL: set TWILIO_TEST_POSTGRES_URL (scripts/test_postgres.sh start DIR prints one)"
            )]
            async fn postgres() {
                if let Some(db) = $crate::support::TestDb::postgres().await {
                    super::$name(db).await;
                }
            }
        }
    )*};
}

pub(crate) use on_both_databases;

// ---- redis -----------------------------------------------------------------------------------

/// The Redis server `TWILIO_TEST_REDIS_URL` names (`.ci/run` starts one), or `None` with a
/// line on standard error (once) outside CI: only a run with `--include-ignored` gets here
/// without it (`build.rs` sets `skip_redis`). Under `CI` a missing server is a failure.
pub(crate) fn redis_url() -> Option<String> {
    match std::env::var("TWILIO_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but TWILIO_TEST_REDIS_URL is not: .ci/run starts Redis")
        }
        Err(_) => {
            static ONCE: Once = Once::new();
            ONCE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "server tests: skipping the shared-Redis replay test (TWILIO_TEST_REDIS_URL is not set)"
                );
            });
            None
        }
    }
}

// ---- the server ------------------------------------------------------------------------------

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) startup: Startup,
    /// The server's database handle (it counts credential lookups).
    pub(crate) db: Db,
    pub(crate) log: LogSender,
    pub(crate) shutdown: oneshot::Sender<()>,
    pub(crate) task: JoinHandle<Result<(), BoxError>>,
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
}

impl Server {
    pub(crate) async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (router, handles) = bounded("start", tower_twilio_example_server::build(config, addr))
            .await
            .unwrap();
        let startup = handles.startup.clone();
        let log = handles.log.clone();
        let db = handles.db.clone();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(tower_twilio_example_server::serve(
            listener,
            router,
            handles,
            async move {
                let _ = stop.await;
            },
        ));
        Self {
            addr,
            startup,
            db,
            log,
            shutdown,
            task,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Graceful shutdown: in-flight requests finish, the webhook log is drained.
    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(());
        bounded("shutdown", self.task).await.unwrap().unwrap();
    }

    /// The public base URL (no proxy: the server's own address).
    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A form webhook for `preset`, with `overrides`, signed with `token`.
    pub(crate) fn webhook(
        &self,
        preset: &Preset,
        account: &str,
        token: &str,
        overrides: &[(&str, &str)],
    ) -> SignedRequest {
        let mut params = preset.params(account);
        let overrides: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        apply_overrides(&mut params, &overrides);
        sign_request(
            &format!("{}{}", self.base(), preset.path()),
            Body::Form(params),
            Signer::AuthToken(token.as_bytes()),
        )
    }

    pub(crate) async fn send(
        &self,
        signed: &SignedRequest,
    ) -> (StatusCode, String, Option<String>) {
        let mut request = Request::builder().method(signed.method).uri(format!(
            "http://{}{}",
            self.addr,
            signed.path_and_query()
        ));
        for (name, value) in &signed.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(signed.body.clone())))
            .unwrap();
        self.request(request).await
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, String) {
        let request = Request::get(format!("http://{}{path}", self.addr))
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::default())
            .unwrap();
        let (status, body, _) = self.request(request).await;
        (status, body)
    }

    pub(crate) async fn request(
        &self,
        request: Request<Full<Bytes>>,
    ) -> (StatusCode, String, Option<String>) {
        bounded("request", async {
            let response = self.client.request(request).await.unwrap();
            let status = response.status();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                String::from_utf8(body.to_vec()).unwrap(),
                content_type,
            )
        })
        .await
    }

    /// `GET /api/webhooks?limit=…` once the log has caught up.
    pub(crate) async fn webhooks(&self, limit: usize) -> Vec<Value> {
        bounded("log flush", self.log.flush()).await;
        let (status, body) = self.get(&format!("/api/webhooks?limit={limit}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    pub(crate) async fn message(&self, sid: &str) -> (StatusCode, Value) {
        let (status, body) = self.get(&format!("/api/messages/{sid}")).await;
        (status, serde_json::from_str(&body).unwrap())
    }
}

/// The statuses of a message or call record (the only record, given the whole answer).
pub(crate) fn statuses(record: &Value) -> Vec<(String, Option<String>)> {
    let record = match record["records"].as_array() {
        Some(records) => {
            assert_eq!(records.len(), 1, "{record}");
            &records[0]
        }
        None => record,
    };
    record["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["status"].as_str().unwrap().to_owned(),
                s["error_code"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

pub(crate) fn status(preset_status: &str) -> Preset {
    Preset::Status(preset_status.to_owned())
}

/// `signed` again, without the parameters `names`.
pub(crate) fn resign_without(
    server: &Server,
    signed: &SignedRequest,
    names: &[&str],
) -> SignedRequest {
    let params: Vec<(String, String)> = form_urlencoded::parse(&signed.body)
        .filter(|(k, _)| !names.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    sign_request(
        &format!("{}/twilio/status", server.base()),
        Body::Form(params),
        Signer::AuthToken(TOKEN.as_bytes()),
    )
}

pub(crate) trait BodyParam {
    fn body_param(&self, name: &str) -> Option<String>;
}

impl BodyParam for SignedRequest {
    fn body_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

// ---- the server binary -----------------------------------------------------------------------

/// The `server` binary of this crate, run as a user would, with its output in files.
pub(crate) struct Process {
    child: std::process::Child,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response: status, headers, body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

impl Process {
    /// Starts `server` with `args` and `env` (plus `DATABASE_URL` in a fresh directory and
    /// `PORT=0`), in that directory, under umask 022, and waits for its start-up message.
    pub(crate) async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), args, env).await
    }

    /// [`start`](Self::start) in `dir` (which may hold files already).
    pub(crate) async fn start_in(
        dir: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let out = std::fs::File::create(dir.path().join("stdout")).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr")).unwrap();
        // Under umask 022, the usual default, whatever the test runner's: the file-mode tests
        // check what the server itself makes of it.
        let mut command = std::process::Command::new("/bin/sh");
        command
            .args([
                "-c",
                "umask 022 && exec \"$0\" \"$@\"",
                env!("CARGO_BIN_EXE_server"),
            ])
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", dir.path().join("webhooks.db"))
            .env("PORT", "0")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start the server binary");
        let mut process = Self {
            child,
            addr: "127.0.0.1:9".parse().unwrap(),
            dir,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let stdout = process.stdout();
            if let Some(line) = stdout.lines().find(|l| l.contains(" listening on http://")) {
                process.addr = line
                    .rsplit("http://")
                    .next()
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "the server exited ({status}): {}\n{}",
                    stdout,
                    process.stderr()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no start-up message: {stdout}\n{}",
                process.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// The server's resident memory, in kB (Linux).
    pub(crate) fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .unwrap()
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit; returns everything it printed.
    pub(crate) async fn stop(mut self) -> (String, tempfile::TempDir) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + LIMIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let output = format!("{}\n{}", self.stdout(), self.stderr());
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (output, dir)
    }

    /// Kills the process at once (`SIGKILL`), as a crash or an OOM kill would: nothing of it
    /// runs any more (no graceful shutdown, no drop, no release of a replay claim), and the
    /// kernel closes its connections. Returns everything it printed.
    pub(crate) fn kill(&mut self) -> String {
        self.child.kill().expect("kill the server");
        self.child.wait().unwrap();
        format!("{}\n{}", self.stdout(), self.stderr())
    }

    /// Waits until the server's log (standard error) has a line containing every one of
    /// `parts`; returns that line.
    pub(crate) async fn wait_for_log_line(&self, parts: &[&str]) -> String {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Some(line) = self
                .stderr()
                .lines()
                .find(|line| parts.iter().all(|part| line.contains(part)))
            {
                return line.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {parts:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET path` with the admin token `admin` (JSON).
    pub(crate) async fn get_json(&self, path: &str, admin: &str) -> Value {
        let auth = format!("Bearer {admin}");
        let answer = self
            .call("GET", path, &[("authorization", &auth)], "")
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        serde_json::from_str(&answer.body).unwrap()
    }

    /// A request to this server, with these headers (a `host` header replaces the default).
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        bounded("request", async {
            let response = self.client.request(request).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            Answer {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        })
        .await
    }

    /// Sends a signed webhook (its own `Host` unless `host` is given).
    pub(crate) async fn send(&self, signed: &SignedRequest, host: Option<&str>) -> Answer {
        let mut headers: Vec<(&str, &str)> = signed
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if let Some(host) = host {
            headers.push(("host", host));
        }
        let body = String::from_utf8(signed.body.clone()).unwrap();
        self.call(signed.method, signed.path_and_query(), &headers, &body)
            .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A form webhook with exactly these parameters, signed with `token`, for `path`.
pub(crate) fn form_webhook(
    server: &Server,
    path: &str,
    token: &str,
    pairs: &[(&str, &str)],
) -> SignedRequest {
    sign_request(
        &format!("{}{path}", server.base()),
        Body::Form(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        Signer::AuthToken(token.as_bytes()),
    )
}

// ---- a store that goes down ------------------------------------------------------------------

/// A TCP proxy on a loopback port of its own, in front of a store (Redis, PostgreSQL): a server
/// pointed at it reaches the store until [`stop`](Self::stop), after which the proxy's port
/// refuses connections and every connection through it is closed, as when the store's process
/// stops. The store itself stays up for the other tests.
pub(crate) struct StoreProxy {
    pub(crate) addr: SocketAddr,
    accept: JoinHandle<()>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl StoreProxy {
    /// A proxy to `upstream` (`host:port`).
    pub(crate) async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::<std::sync::Mutex<Vec<JoinHandle<()>>>>::default();
        let accept = tokio::spawn({
            let connections = std::sync::Arc::clone(&connections);
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let connection = tokio::spawn(async move {
                        if let Ok(mut store) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut store).await;
                        }
                    });
                    connections.lock().unwrap().push(connection);
                }
            }
        });
        Self {
            addr,
            accept,
            connections,
        }
    }

    /// The store goes down: the port is closed, then every open connection.
    pub(crate) async fn stop(&mut self) {
        self.accept.abort();
        // Cancelled: the listener is closed once this returns.
        let _ = (&mut self.accept).await;
        let connections: Vec<_> = self.connections.lock().unwrap().drain(..).collect();
        for connection in connections {
            connection.abort();
            let _ = connection.await;
        }
    }
}

impl Drop for StoreProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}
