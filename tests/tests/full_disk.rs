//! A full disk, on a real small filesystem: a tmpfs of a few MiB mounted
//! over the state directory. Mounting needs root: as root (CI) the test
//! mounts it; otherwise it runs itself again inside a user and mount
//! namespace of its own (`unshare --user --map-root-user --mount`), where
//! it may. Where neither is possible it fails saying so, unless
//! `SWITCHYARD_TEST_NO_MOUNT=1` skips it out loud.
//! A sync that runs out of space fails with a clear error and no panic,
//! loses nothing, and once space is freed the next start opens the same
//! database (no unfinished snapshot, no "damaged") and finishes the work
//! exactly once.

use std::path::{Path, PathBuf};
use std::process::Command;

use switchyard_testkit::harness::{Harness, Options, switchyard_bin};

/// A tmpfs mounted at a directory; unmounted on drop.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> Option<SmallFs> {
        if std::env::var_os("SWITCHYARD_TEST_NO_MOUNT").is_some() {
            eprintln!("SKIPPED: SWITCHYARD_TEST_NO_MOUNT is set, no small filesystem is mounted");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "switchyard-test",
            ])
            .arg(dir)
            .output()
            .expect("mount(8) runs");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs at {} failed (this test needs root; set SWITCHYARD_TEST_NO_MOUNT=1 to skip it): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(SmallFs {
            dir: dir.to_owned(),
        })
    }

    /// Fill the filesystem with a file until `leave` bytes are free.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.dir.join("filler");
        let free = free_bytes(&self.dir);
        let size = free.saturating_sub(leave);
        std::fs::write(&filler, vec![0u8; size as usize]).unwrap();
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

fn sync(h: &Harness) -> std::process::Output {
    Command::new(switchyard_bin())
        .args(["sync", "--once", "--config"])
        .arg(&h.config_path)
        .output()
        .unwrap()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_up_mid_sync_fails_clearly_and_the_next_start_finishes_exactly_once() {
    if !is_root() && std::env::var_os("SWITCHYARD_TEST_NO_MOUNT").is_none() {
        // Run this same test again where mounting is allowed.
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount"])
            .arg(exe)
            .args([
                "--exact",
                "a_disk_that_fills_up_mid_sync_fails_clearly_and_the_next_start_finishes_exactly_once",
                "--nocapture",
            ])
            .output()
            .expect("unshare(1) runs");
        assert!(
            out.status.success(),
            "in a user and mount namespace: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let h = Harness::start_with(Options {
        employees: 60,
        page_size: 10,
        // One operation per call: the free space below is measured for
        // the records of single calls.
        limits: "max_batch = 1".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let Some(fs) = SmallFs::mount(&h.dir.join("state"), "8m") else {
        return;
    };

    // The plugins' compiled code is cached in the state directory: a first
    // command with room writes it (and creates the database).
    let status = Command::new(switchyard_bin())
        .args(["status", "--config"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");

    // First at start: almost nothing free.
    let filler = fs.fill(16 << 10);
    let out = sync(&h);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no space, no success: {stderr}");
    assert_ne!(out.status.code(), Some(101), "no panic: {stderr}");
    assert!(
        stderr.contains(
            "the disk is full; it is not damaged: free space on that device and run again"
        ),
        "says the disk is full, not that the database is damaged: {stderr}"
    );
    assert!(
        h.lms.users().is_empty(),
        "nothing was sent without a record of it"
    );

    // Then mid-sync: room to open the database and start, not to finish.
    std::fs::remove_file(&filler).unwrap();
    // (Measured: with 700 KiB free, a first sync of 60 employees provisions
    // about half of them before sled cannot write.)
    let filler = fs.fill(700 << 10);
    let out = sync(&h);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran out of space: {stderr}");
    assert_ne!(out.status.code(), Some(101), "no panic: {stderr}");
    assert!(
        stderr.contains("hint: the disk holding the state directory is full"),
        "says what to do: {stderr}"
    );
    let provisioned_before = h.lms.users().len();
    let active = h
        .hris
        .employees()
        .into_iter()
        .filter(|e| e.status == "Active")
        .count();
    assert!(
        provisioned_before > 0 && provisioned_before < active,
        "the disk filled up in the middle of the sync ({provisioned_before} of {active} accounts)"
    );

    // Space again: the same database opens and the work finishes once.
    std::fs::remove_file(&filler).unwrap();
    let out = sync(&h);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "finishes after space is freed: {stderr}"
    );
    assert!(
        !stderr.contains("damaged"),
        "the database was not left damaged: {stderr}"
    );
    let unfinished: Vec<_> = std::fs::read_dir(&fs.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".generating"))
        .collect();
    assert!(unfinished.is_empty(), "{unfinished:?}");
    let users = h.lms.users();
    let mut ids: Vec<&str> = users.iter().map(|u| u.idnumber.as_str()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "no account created twice");
    assert_eq!(users.len(), active, "every active employee has an account");
    assert!(
        users.len() >= provisioned_before,
        "nothing provisioned before was lost"
    );
    let verify = Command::new(switchyard_bin())
        .args(["audit", "verify", "--config"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "the audit chain verifies: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
