//! `--cluster`: a scheduler and two executors (the built binary, as child
//! processes on free ports) against embedded mode on the same warehouse.
//! Built and run with `--features distributed`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use taglake_storage::{Table, Warehouse};
use taglake_tagger::snapshot;

use crate::peers::{Peer, program, require};
use crate::tag_reference::runtime;
use crate::{Tagged, copy_dir, table_rows, tagged, taglake, taglake_ok};

/// A child `taglake` process, killed when dropped; its stderr in a file.
struct Process {
    child: Child,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Process {
    fn spawn(args: &[&str]) -> (Process, std::process::ChildStdout) {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_taglake"))
            .args(args)
            .env_remove("TAGLAKE_WAREHOUSE")
            .env_remove("TAGLAKE_CLUSTER")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("taglake starts");
        let stdout = child.stdout.take().unwrap();
        (Process { child, log, _logdir: logdir }, stdout)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on now (and its successor, for an executor's gRPC).
fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// The cluster tests one at a time: each cluster has two single-slot
/// executors, and two of them at once on a 2-core machine starve the
/// heartbeats the scheduler uses to tell a live executor from a lost one.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// One scheduler and `n` executors of one slot each.
struct Cluster {
    url: String,
    scheduler: Process,
    executors: Vec<Process>,
}

impl Cluster {
    fn start(executors: usize) -> Cluster {
        let (scheduler, stdout) = Process::spawn(&["scheduler", "--bind", "127.0.0.1:0", "--executor-timeout", "15"]);
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).unwrap();
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the scheduler did not start: {first}\n{}", scheduler.log()));
        let addr = addr.to_string();
        let executors = (0..executors)
            .map(|_| {
                let bind = format!("127.0.0.1:{}", free_port());
                Process::spawn(&["executor", "--scheduler", &addr, "--bind", &bind, "--slots", "1", "--heartbeat", "1"])
                    .0
            })
            .collect();
        Cluster { url: format!("df://{addr}"), scheduler, executors }
    }

    fn logs(&self) -> String {
        let mut all = format!("--- scheduler\n{}", self.scheduler.log());
        for (i, e) in self.executors.iter().enumerate() {
            all.push_str(&format!("\n--- executor {i}\n{}", e.log()));
        }
        all
    }

    /// `taglake ARGS --cluster URL`, which must succeed.
    fn ok(&self, args: &[&str], cwd: &Path) -> String {
        let mut all = args.to_vec();
        all.extend(["--cluster", &self.url]);
        let out = taglake(&all, cwd);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "taglake {all:?} failed:\n{stdout}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        stdout
    }
}

fn fixture() -> &'static Tagged {
    static F: OnceLock<Tagged> = OnceLock::new();
    F.get_or_init(|| tagged(3_000, 41))
}

/// The same SQL and audiences give the same answers on the cluster as embedded.
#[test]
fn sql_and_audiences_on_the_cluster_equal_embedded() {
    let _one = serial();
    let dir = &fixture().dir;
    let cluster = Cluster::start(2);
    let queries = [
        "SELECT count(*) FROM members WHERE tier_gold AND NOT dormant_90_plus",
        "SELECT count(*) FROM members",
        "SELECT city, count(*) AS n FROM members WHERE tier_gold OR tier_silver GROUP BY city ORDER BY city",
        "SELECT member_id, city, tier_gold FROM audience('tier_gold AND NOT dormant_90_plus') ORDER BY member_id",
        "SELECT count(*) FROM audience('rfm_champions OR (tier_silver AND NOT lifecycle_churned)')",
        "SELECT m.tier_gold, count(DISTINCT o.order_id) AS orders, round(sum(o.amount), 2) AS spend \
         FROM orders o JOIN members m ON o.member_key = m.member_key GROUP BY m.tier_gold ORDER BY 1",
        "SELECT name, members FROM tags WHERE family = 'tier' ORDER BY name",
        "SELECT member_key, recency_days, orders_total FROM features WHERE orders_total > 20 ORDER BY member_key",
        "SELECT in_experiment, count(*) FROM members GROUP BY 1 ORDER BY 1",
    ];
    for q in queries {
        let embedded = taglake_ok(&["sql", "--format", "csv", q], dir);
        let on_cluster = cluster.ok(&["sql", "--format", "csv", q], dir);
        assert_eq!(on_cluster, embedded, "{q}");
        assert!(embedded.lines().count() > 1, "{q} returned nothing:\n{embedded}");
    }
    for args in [
        &["audience", "count", "tier_gold AND NOT dormant_90_plus", "--format", "json"][..],
        &["audience", "overlap", "tier_gold", "dormant_90_plus", "rfm_champions", "--format", "csv"],
        &["audience", "sample", "tier_gold", "--n", "5", "--seed", "3", "--format", "csv"],
    ] {
        assert_eq!(cluster.ok(args, dir), taglake_ok(args, dir), "{args:?}");
    }
    // Bad input on the cluster path: the errors are the embedded ones.
    let out = taglake(&["sql", "SELECT count(*) FROM memberz", "--cluster", &cluster.url], dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("did you mean `members`?"), "{err}");
    let out = taglake(&["audience", "count", "tier_gld", "--cluster", &cluster.url], dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tier_gold"), "{err}");
}

/// A cluster that is not there, and addresses that are not addresses.
#[test]
fn a_missing_cluster_is_a_clear_error() {
    let dir = &fixture().dir;
    let port = free_port();
    let out = taglake(&["sql", "SELECT 1", "--cluster", &format!("df://127.0.0.1:{port}")], dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot reach the taglake scheduler"), "{err}");
    let out = taglake(&["sql", "SELECT 1", "--cluster", "127.0.0.1:50050"], dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("must start with df://"), "{err}");
    let out = taglake(&["executor", "--scheduler", "nowhere"], dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("expected HOST:PORT"), "{err}");
}

/// A base spanning 3 chunks of 65,536 members (few orders each), ingested once.
fn big_base() -> &'static Path {
    static F: OnceLock<tempfile::TempDir> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let args = ["--members", "140000", "--seed", "5", "--years", "1", "--lines-per-member-year", "3"];
        taglake_ok(&[&["generate"][..], &args, &["--end-date", "2026-01-01", "--out", "data"]].concat(), tmp.path());
        for (table, files) in
            [("products", "data/products.parquet"), ("members", "data/members.parquet"), ("orders", "data/orders")]
        {
            taglake_ok(&["ingest", table, files], tmp.path());
        }
        tmp
    })
    .path()
}

/// Every tag's bitmap bytes and the snapshot's own fields.
fn snapshot_bytes(warehouse: &Path) -> (String, Vec<(String, Vec<u8>)>) {
    let rt = runtime();
    let wh = Warehouse::open(warehouse).unwrap();
    let info = rt.block_on(snapshot::info(&wh, None)).unwrap();
    let (_, bitmaps) = rt.block_on(snapshot::bitmaps(&wh, None, None)).unwrap();
    let bytes = info
        .tags
        .iter()
        .zip(bitmaps)
        .map(|(t, (name, b))| {
            assert_eq!(t.name, name);
            let mut out = Vec::new();
            b.serialize_into(&mut out).unwrap();
            (name, out)
        })
        .collect();
    let head = format!(
        "snapshot {} as of {} base {} features {:?} catalog {}",
        info.snapshot, info.as_of, info.base_members, info.features_version, info.catalog_digest
    );
    (head, bytes)
}

/// Asserts that the newest snapshot of `warehouse` is the reference's, byte for byte.
fn assert_reference(warehouse: &Path, when: &str) {
    let (e_head, e_tags, e_features) = reference();
    let (d_head, d_tags) = snapshot_bytes(warehouse);
    assert_eq!(&d_head, e_head, "{when}");
    assert_eq!(d_tags.len(), e_tags.len(), "{when}");
    assert!(e_tags.len() > 100, "{} tags", e_tags.len());
    for ((dn, db), (en, eb)) in d_tags.iter().zip(e_tags) {
        assert_eq!(dn, en, "{when}");
        assert!(db == eb, "{when}: tag {en}: the cluster's bitmap bytes differ from the embedded run's");
    }
    assert!(&table_rows(warehouse, Table::Features, &[]) == e_features, "{when}: the features table differs");
}

/// `taglake tag --cluster` over 3 ranges commits what `taglake tag` does:
/// the same tags with the same bitmap bytes and the same `features` rows.
#[test]
fn a_cluster_refresh_commits_the_embedded_snapshot() {
    let _one = serial();
    let (_, e_tags, _) = reference();
    // Quintile scores and rank bands: cut points that fall inside ties,
    // some of them across ranges.
    for tag in ["rfm_r_1", "rfm_r_5", "rfm_f_1", "rfm_m_3", "value_core", "value_tail"] {
        let (_, bytes) = e_tags.iter().find(|(n, _)| n == tag).unwrap_or_else(|| panic!("no tag {tag}"));
        assert!(bytes.len() > 16, "{tag} is empty");
    }
    let cluster = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&big_base().join("warehouse"), &dir.path().join("warehouse"));
    let out = cluster.ok(&["tag", "--as-of", "2026-01-01", "--range-members", "65536"], dir.path());
    assert!(out.contains("tag: snapshot"), "{out}");
    assert_reference(&dir.path().join("warehouse"), "a cluster refresh");
}

/// An executor killed while a refresh runs on two: the refresh either
/// finishes on the other one, complete, or fails saying so and commits
/// nothing. Queries afterwards run on the survivor.
#[test]
fn a_killed_executor_never_leaves_a_partial_snapshot() {
    let _one = serial();
    reference();
    let mut cluster = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    copy_dir(&big_base().join("warehouse"), &warehouse);
    let rt = runtime();
    let wh = Warehouse::open(&warehouse).unwrap();
    let before = rt.block_on(snapshot::versions(&wh)).unwrap();
    let features_before = rt.block_on(wh.version(Table::Features)).unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_taglake"))
        .args(["tag", "--as-of", "2026-01-01", "--range-members", "65536", "--cluster", &cluster.url])
        .current_dir(dir.path())
        .env_remove("TAGLAKE_WAREHOUSE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-run: once the scheduler has the range tasks, an executor dies.
    while !cluster.scheduler.log().contains("TagRangeExec") {
        assert!(run.try_wait().unwrap().is_none(), "the refresh ended before its range tasks:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    cluster.executors[0].kill();
    let out = run.wait_with_output().unwrap();
    let after = rt.block_on(snapshot::versions(&wh)).unwrap();
    if out.status.success() {
        assert_eq!(after.len(), before.len() + 1);
        assert_reference(&warehouse, "a refresh that lost an executor");
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("nothing was committed"),
            "{err}
{}",
            cluster.logs()
        );
        assert_eq!(after, before, "a failed refresh added a snapshot");
        assert_eq!(
            rt.block_on(wh.version(Table::Features)).unwrap(),
            features_before,
            "a failed refresh committed features"
        );
        // The survivor takes the whole run.
        cluster.ok(&["tag", "--as-of", "2026-01-01", "--range-members", "65536"], dir.path());
        assert_reference(&warehouse, "a refresh on the survivor");
    }
    let q = "SELECT count(*) FROM members WHERE rfm_r_5 AND NOT value_tail";
    assert_eq!(
        cluster.ok(&["sql", "--format", "csv", q], dir.path()),
        taglake_ok(&["sql", "--format", "csv", q], dir.path())
    );
}
/// A snapshot as compared: its fields, every tag's bitmap bytes, the `features` rows.
type Committed = (String, Vec<(String, Vec<u8>)>, Vec<String>);

/// The embedded run over [`big_base`], once: what every cluster run must commit.
fn reference() -> &'static Committed {
    static F: OnceLock<Committed> = OnceLock::new();
    F.get_or_init(|| {
        let dir = big_base().join("embedded");
        copy_dir(&big_base().join("warehouse"), &dir.join("warehouse"));
        taglake_ok(&["tag", "--as-of", "2026-01-01"], &dir);
        let (head, tags) = snapshot_bytes(&dir.join("warehouse"));
        (head, tags, table_rows(&dir.join("warehouse"), Table::Features, &[]))
    })
}

/// The refresh's steps without the engine: every range in this process.
/// The second run replaces the `features` files the first one committed.
#[test]
fn the_range_steps_in_process_commit_the_embedded_snapshot() {
    let _one = serial();
    reference();
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    copy_dir(&big_base().join("warehouse"), &warehouse);
    let rt = runtime();
    let wh = Warehouse::open(&warehouse).unwrap();
    let lock = wh.lock_writer("the range steps test", taglake_storage::Wait::No).unwrap();
    let run = || {
        rt.block_on(async {
            let (ctx, _) = taglake_query::open(&wh).await.unwrap();
            let options = taglake_tagger::RefreshOptions::builder()
                .as_of(chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap())
                .build()
                .unwrap();
            let split = taglake_distributed::refresh::ClusterRefresh { range_members: Some(65_536) };
            let runner = taglake_distributed::refresh::Runner::InProcess(ctx);
            taglake_distributed::refresh::refresh_on(&runner, &wh, &lock, &options, &split).await.unwrap()
        })
    };
    let first = run();
    assert_reference(&warehouse, "the steps in process");
    let files = rt.block_on(wh.files(Table::Features)).unwrap();
    let second = run();
    assert_eq!(second.features_version, first.features_version + 1);
    assert_eq!(second.snapshot, first.snapshot + 1);
    let again = rt.block_on(wh.files(Table::Features)).unwrap();
    assert!(
        again.iter().all(|f| files.iter().all(|g| g.path != f.path)),
        "the first run's features files are still in the table"
    );
    // Same tags and rows as the reference, in the next snapshot.
    let (_, e_tags, e_features) = reference();
    let (_, tags) = snapshot_bytes(&warehouse);
    assert!(&tags == e_tags, "the second run's tags differ");
    assert!(&table_rows(&warehouse, Table::Features, &[]) == e_features, "the second run's features differ");
}

/// `taglake serve --cluster`: psql's warehouse queries run on the cluster
/// and answer as embedded; its catalog queries stay on the server.
#[test]
fn the_server_runs_warehouse_queries_on_the_cluster() {
    if !require(&[Peer::Psql]) {
        return;
    }
    let _one = serial();
    let dir = &fixture().dir;
    let cluster = Cluster::start(2);
    let mut serve = Command::new(env!("CARGO_BIN_EXE_taglake"))
        .args(["serve", "--listen", "127.0.0.1:0", "--refresh-interval", "1h", "--cluster", &cluster.url])
        .current_dir(dir)
        .env_remove("TAGLAKE_WAREHOUSE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(serve.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let port = first.trim().rsplit(':').next().unwrap().to_string();
    let psql = |sql: &str| {
        let out = Command::new(program(Peer::Psql))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "taglake", "-d", "taglake", "-At", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {sql}: {}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let jobs = || cluster.scheduler.log().matches("Job submitted").count();
    for q in [
        "SELECT count(*) FROM members WHERE tier_gold AND NOT dormant_90_plus",
        "SELECT city, count(*) FROM audience('tier_gold') GROUP BY city ORDER BY city",
    ] {
        let before = jobs();
        let on_cluster = psql(q);
        assert!(jobs() > before, "{q} did not run on the cluster:\n{}", cluster.logs());
        let embedded = taglake_ok(&["sql", "--format", "csv", q], dir);
        let embedded: Vec<&str> = embedded.lines().skip(1).collect();
        assert_eq!(on_cluster.replace('|', ","), embedded.join("\n"), "{q}");
    }
    // Catalog queries need the server's own tables: they run here.
    let before = jobs();
    assert!(psql("SELECT table_name FROM information_schema.tables WHERE table_name = 'members'").contains("members"));
    assert_eq!(jobs(), before, "a catalog query went to the cluster");
    let _ = serve.kill();
    let _ = serve.wait();
}
