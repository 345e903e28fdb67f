//! The warehouse writer lock from the command line: every writing command
//! is refused while another holds it, naming the holder; `--wait` queues;
//! readers never wait; a killed holder blocks nobody.

use std::path::Path;
use std::time::{Duration, Instant};

use taglake_storage::lock::last_holder;
use taglake_storage::{Wait, Warehouse};

use crate::{start, taglake, taglake_ok};

fn stderr_of(args: &[&str], dir: &Path) -> String {
    let out = taglake(args, dir);
    assert!(!out.status.success(), "taglake {args:?} should have been refused");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn writers_are_refused_with_the_holders_name_readers_are_not_and_wait_queues() {
    let t = crate::tagged(2_000, 4);
    let dir = &t.dir;
    taglake_ok(&["cluster", "--k", "3"], dir);
    let wh = Warehouse::open(dir.join("warehouse")).unwrap();
    let held = wh.lock_writer("taglake tag --as-of 2026-11-01", Wait::No).unwrap();
    let since = held.holder().since.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let holder = format!(
        "warehouse {} is being written by `taglake tag --as-of 2026-11-01` (pid {} on {}, since {since}); use --wait to queue",
        wh.root().display(),
        std::process::id(),
        held.holder().host
    );
    std::fs::write(dir.join("more.csv"), "member_id,registered_at\nNEW1,2025-01-01T00:00:00Z\n").unwrap();
    let writers: [&[&str]; 7] = [
        &["ingest", "members", "more.csv"],
        &["tag"],
        &["cluster", "--k", "3"],
        &["export", "--audience", "tier_gold", "--salt", "s", "--out", "x.csv"],
        &["optimize", "orders"],
        &["vacuum"],
        &["vacuum", "--dry-run"],
    ];
    for args in writers {
        let err = stderr_of(args, dir);
        assert!(err.contains(&holder), "taglake {args:?}:\n{err}\nwanted: {holder}");
    }
    assert!(!dir.join("x.csv").exists());
    // The demo writes only its own warehouse: the held lock does not stop it.
    taglake_ok(&["demo", "--members", "200", "--data", "demo-data"], dir);
    // Readers go on.
    taglake_ok(&["sql", "SELECT count(*) FROM members WHERE tier_gold"], dir);
    taglake_ok(&["audience", "count", "tier_gold AND NOT in_experiment"], dir);
    taglake_ok(&["tags", "list"], dir);
    taglake_ok(&["cluster", "profile", "--format", "csv"], dir);
    taglake_ok(&["experiment", "list"], dir);
    let status = taglake_ok(&["status"], dir);
    assert!(status.contains("writer: `taglake tag --as-of 2026-11-01` (pid"), "{status}");

    // `--wait` queues behind the holder, then runs.
    let mut queued = start(&["ingest", "members", "more.csv", "--wait"], dir);
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = queued.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Once it says it waits, it is blocked on the lock (a minute is a safety net).
    let waiting = rx.recv_timeout(Duration::from_secs(60)).expect("the queued ingest says it waits");
    assert!(waiting.starts_with("waiting: the warehouse is being written by `taglake tag --as-of 2026-11-01`"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(queued.try_wait().unwrap().is_none(), "the queued ingest ran while the lock was held");
    drop(held);
    let out = queued.wait_with_output().unwrap();
    let err = reader.join().unwrap();
    assert!(out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 inserted"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(last_holder(wh.root()), None, "a finished writer lets go cleanly");
    assert!(taglake_ok(&["status"], dir).contains("writer: none"));
}

#[test]
fn a_killed_writer_never_blocks_the_next_one() {
    let t = crate::tagged(2_000, 6);
    let dir = &t.dir;
    let wh = Warehouse::open(dir.join("warehouse")).unwrap();
    let mut child = start(&["tag"], dir);
    // Kill it as soon as it holds the lock (a safety net, not a timing: it
    // normally takes the lock within milliseconds).
    let deadline = Instant::now() + Duration::from_secs(120);
    while last_holder(wh.root()).is_none_or(|h| h.pid != child.id()) {
        assert!(Instant::now() < deadline, "taglake tag never took the lock");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let status = taglake_ok(&["status"], dir);
    assert!(status.contains("stopped before it finished: run it again"), "{status}");
    // No --wait: the lock died with its holder.
    let out = taglake(&["tag"], dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("note: the previous writer, `taglake tag` (pid {}", child.id())), "{err}");
    assert!(err.contains("stopped before it finished"), "{err}");
}
