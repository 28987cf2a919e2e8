//! CPU quotas for the servers the harness starts, so that scale-out can be
//! shown where the nodes are the bound: each node gets a control group of
//! its own limited to a share of a core, while PostgreSQL and the harness
//! run unconstrained.
//!
//! Invariant: a quota is set up before any server starts (so a machine
//! that cannot do it fails the run at once, saying why), each server is
//! moved into its group right after it is spawned (its later threads
//! inherit the group), and the group is removed when the server is gone.

use crate::Result;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The scheduler period of a quota: short, so that a throttled node stalls
/// for milliseconds rather than for a tenth of a second.
const PERIOD_US: u64 = 10_000;

/// The cgroup v2 hierarchy.
const V2_ROOT: &str = "/sys/fs/cgroup";
/// The cgroup v1 `cpu` controller's hierarchy.
const V1_ROOT: &str = "/sys/fs/cgroup/cpu";

/// Which kernel interface limits the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    /// cgroup v2, `cpu.max`.
    V2,
    /// cgroup v1, `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
    V1,
}

struct Setting {
    cores: f64,
    mechanism: Mechanism,
}

static SETTING: OnceLock<Setting> = OnceLock::new();
static GROUPS: AtomicUsize = AtomicUsize::new(0);

/// Limits every server this process starts to `cores` CPUs (e.g. 0.5),
/// through cgroup v2 where the machine has it, else cgroup v1; fails when
/// neither can be written (it needs root). Answers how, for the report.
pub fn limit_nodes(cores: f64) -> Result<String> {
    if !(cores > 0.0 && cores <= 64.0) {
        return Err(format!("--node-cpu-quota {cores}: give a share of CPUs above 0, e.g. 0.5").into());
    }
    let v2 = std::fs::read_to_string(Path::new(V2_ROOT).join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "cpu"));
    let mechanism = if v2 {
        // The children of the root get the cpu controller.
        std::fs::write(Path::new(V2_ROOT).join("cgroup.subtree_control"), "+cpu")
            .map_err(|e| format!("cannot enable the cgroup v2 cpu controller: {e}"))?;
        Mechanism::V2
    } else if Path::new(V1_ROOT).join("cpu.cfs_quota_us").exists() {
        Mechanism::V1
    } else {
        return Err("--node-cpu-quota needs cgroup v2 with the cpu controller, or cgroup v1's cpu controller".into());
    };
    SETTING.set(Setting { cores, mechanism }).map_err(|_| "the node quota is set already")?;
    // Fail now, not at the first server, when groups cannot be made.
    drop(Group::make()?);
    Ok(describe())
}

/// How the nodes are limited, e.g. `each node ≤ 0.5 CPU (cgroup v1
/// cpu.cfs_quota_us)`, or "" without a quota.
pub fn describe() -> String {
    SETTING.get().map_or_else(String::new, |s| {
        let how = match s.mechanism {
            Mechanism::V2 => "cgroup v2 cpu.max",
            Mechanism::V1 => "cgroup v1 cpu.cfs_quota_us",
        };
        format!("each node ≤ {} CPU ({how}, period {} ms)", s.cores, PERIOD_US / 1_000)
    })
}

/// A control group holding one server.
pub struct Group {
    dir: PathBuf,
}

impl Group {
    /// A fresh group with the quota, when one is set.
    fn make() -> Result<Option<Self>> {
        let Some(s) = SETTING.get() else { return Ok(None) };
        let n = GROUPS.fetch_add(1, Ordering::SeqCst);
        let name = format!("quern-bench-{}-{n}", std::process::id());
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let quota = ((s.cores * PERIOD_US as f64).round() as u64).max(1_000);
        let root = if s.mechanism == Mechanism::V2 { V2_ROOT } else { V1_ROOT };
        let group = Self { dir: Path::new(root).join(name) };
        std::fs::create_dir(&group.dir).map_err(|e| format!("cannot make {}: {e}", group.dir.display()))?;
        let write = |file: &str, value: String| {
            std::fs::write(group.dir.join(file), value)
                .map_err(|e| format!("cannot write {}/{file}: {e}", group.dir.display()))
        };
        match s.mechanism {
            Mechanism::V2 => write("cpu.max", format!("{quota} {PERIOD_US}"))?,
            Mechanism::V1 => {
                write("cpu.cfs_period_us", PERIOD_US.to_string())?;
                write("cpu.cfs_quota_us", quota.to_string())?;
            }
        }
        Ok(Some(group))
    }

    /// Moves process `pid` (all its threads) into a fresh group, when a
    /// quota is set.
    pub fn place(pid: u32) -> Result<Option<Self>> {
        let Some(group) = Self::make()? else { return Ok(None) };
        std::fs::write(group.dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot move process {pid} into {}: {e}", group.dir.display()))?;
        Ok(Some(group))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Empty once its process has exited; a group still busy stays.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_share_that_is_no_share_is_refused_before_anything_is_set() {
        for cores in [0.0, -1.0, f64::NAN, 65.0] {
            let err = super::limit_nodes(cores).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("give a share of CPUs above 0"), "{cores}: {err}");
        }
        assert_eq!(super::describe(), "", "no quota was set");
    }
}
