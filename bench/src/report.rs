//! What a run reports: one [`Row`] per figure, the terminal table, and the
//! JSON file with the [`Machine`] it ran on.

use crate::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// One measured figure of one system in one scenario.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Row {
    /// `quern`, or a peer's name.
    pub system: String,
    /// What keeps the tasks: `sqlite` or `postgres` for Quern, `redis` or
    /// `postgres` for a peer (read from a peers' file without it: `postgres`
    /// where the row has PostgreSQL's figures). A peer is compared only with
    /// Quern on the same kind of store ([`crate::peers::counterpart`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The scenario, e.g. `submit-concurrent`.
    pub scenario: String,
    /// Which figure of it, e.g. `64 conns` or `submit→start`.
    pub variant: String,
    /// Tasks (or samples) measured.
    pub tasks: u64,
    /// Wall time of the measurement.
    pub seconds: f64,
    /// Throughput, where meaningful.
    pub tasks_per_s: Option<f64>,
    /// Median latency per request (or per sample), in µs.
    pub p50_us: Option<f64>,
    /// 99th percentile latency, in µs.
    pub p99_us: Option<f64>,
    /// 99.9th percentile latency, in µs.
    #[serde(default)]
    pub p999_us: Option<f64>,
    /// The slowest sample, in µs: a stall shows here.
    #[serde(default)]
    pub max_us: Option<f64>,
    /// Server resident memory at the end of the measurement, in MiB.
    pub rss_mb: Option<f64>,
    /// The most the server was resident, in MiB.
    pub peak_rss_mb: Option<f64>,
    /// CPU seconds the server used during the measurement.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds the harness (the client) used during the measurement.
    pub client_cpu_s: Option<f64>,
    /// CPU seconds everything else on the machine used meanwhile: other
    /// people's work that competed with the measurement.
    pub other_cpu_s: Option<f64>,
    /// The server's busiest thread and how busy it was (1.0 = a whole core
    /// for the whole measurement): a serial bottleneck shows here.
    pub busiest_thread: Option<(String, f64)>,
    /// In a peer's row, how many times better Quern's figure of the same
    /// scenario is (see [`crate::peers::ratio`]); set when the rows are merged.
    #[serde(default)]
    pub quern_ratio: Option<f64>,
    /// On PostgreSQL, the CPU µs all of its processes used per task.
    #[serde(default)]
    pub pg_cpu_us_per_task: Option<f64>,
    /// On PostgreSQL, the bytes of write-ahead log written per task.
    #[serde(default)]
    pub wal_bytes_per_task: Option<f64>,
    /// Anything a reader needs to read the figure right.
    pub note: String,
}

impl Row {
    /// Sets the latency columns (p50, p99, p99.9, max) from `samples`.
    pub fn latencies(&mut self, samples: &mut crate::samples::Samples) {
        self.p50_us = samples.percentile_us(0.50);
        self.p99_us = samples.percentile_us(0.99);
        self.p999_us = samples.percentile_us(0.999);
        self.max_us = samples.percentile_us(1.0);
    }

    /// An empty row of Quern's.
    pub fn new(scenario: &str, variant: &str) -> Self {
        Self {
            system: "quern".into(),
            store: None,
            scenario: scenario.into(),
            variant: variant.into(),
            tasks: 0,
            seconds: 0.0,
            tasks_per_s: None,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            max_us: None,
            rss_mb: None,
            peak_rss_mb: None,
            server_cpu_s: None,
            client_cpu_s: None,
            other_cpu_s: None,
            busiest_thread: None,
            quern_ratio: None,
            pg_cpu_us_per_task: None,
            wal_bytes_per_task: None,
            note: String::new(),
        }
    }

    /// A throughput row: `tasks` in `seconds`.
    pub fn throughput(scenario: &str, variant: &str, tasks: u64, seconds: f64) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let rate = if seconds > 0.0 { Some(tasks as f64 / seconds) } else { None };
        Self { tasks, seconds, tasks_per_s: rate, ..Self::new(scenario, variant) }
    }

    /// Records the CPU used between two snapshots.
    #[must_use]
    pub fn with_cpu(mut self, from: &Cpu, to: &Cpu) -> Self {
        self.server_cpu_s = from.server.zip(to.server).map(|(a, b)| b.saturating_sub(a).as_secs_f64());
        let client = to.client.saturating_sub(from.client);
        self.client_cpu_s = Some(client.as_secs_f64());
        let server = from.server.zip(to.server).map_or(Duration::ZERO, |(a, b)| b.saturating_sub(a));
        // Without the server's own figure, its CPU would count as "other".
        let machine = if from.server.is_some() { from.machine.zip(to.machine) } else { None };
        // PostgreSQL's work for the servers is part of the figure, not a
        // disturbance (it is reported on its own, per task).
        let postgres = from
            .postgres
            .as_ref()
            .zip(to.postgres.as_ref())
            .map_or(Duration::ZERO, |(a, b)| b.cpu.saturating_sub(a.cpu));
        self.other_cpu_s = machine.map(|(a, b)| {
            b.saturating_sub(a).saturating_sub(server).saturating_sub(client).saturating_sub(postgres).as_secs_f64()
        });
        self.busiest_thread = from.busiest_thread(to);
        #[allow(clippy::cast_precision_loss)]
        let tasks = self.tasks as f64;
        if let (Some(a), Some(b)) = (&from.postgres, &to.postgres)
            && self.tasks > 0
            && self.tasks_per_s.is_some()
        {
            let cpu = b.cpu.saturating_sub(a.cpu).as_secs_f64() * 1e6 / tasks;
            #[allow(clippy::cast_precision_loss)]
            let wal = b.wal.saturating_sub(a.wal) as f64 / tasks;
            self.pg_cpu_us_per_task = Some(cpu);
            self.wal_bytes_per_task = Some(wal);
        }
        self
    }

    /// The system as the table shows it: Quern on PostgreSQL is
    /// `quern (pg)`, beside the PostgreSQL peers.
    pub fn system_label(&self) -> String {
        match self.store.as_deref() {
            Some("postgres") if self.system == "quern" => "quern (pg)".to_owned(),
            _ => self.system.clone(),
        }
    }

    /// Server CPU µs per task, for throughput rows (in latency rows the CPU
    /// includes the idle waits between samples).
    pub fn server_cpu_us_per_task(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        self.server_cpu_s.filter(|_| self.tasks > 0 && self.tasks_per_s.is_some()).map(|s| s * 1e6 / self.tasks as f64)
    }

    /// The row in one line, for progress output.
    pub fn one_line(&self) -> String {
        let cells = self.cells();
        let [_, scenario, variant, tasks, seconds, rate, p50, p99, p999, max, _, rss, cpu, per_task, thread, note] =
            cells;
        format!(
            "{scenario} {variant}: {tasks} tasks in {seconds} s, {rate} tasks/s, p50 {p50} µs, p99 {p99} µs, \
             p99.9 {p999} µs, max {max} µs, RSS {rss} MB, CPU {cpu} s, {per_task} server µs/task, \
             busiest {thread} {note}"
        )
    }

    fn cells(&self) -> [String; COLUMNS] {
        let opt = |v: Option<f64>, digits: usize| v.map_or_else(|| "-".to_owned(), |v| group(v, digits));
        let rss = match (self.rss_mb, self.peak_rss_mb) {
            (Some(r), Some(p)) => format!("{r:.1} ({p:.1})"),
            (Some(r), None) => format!("{r:.1}"),
            _ => "-".into(),
        };
        [
            self.system_label(),
            self.scenario.clone(),
            self.variant.clone(),
            #[allow(clippy::cast_precision_loss)]
            group(self.tasks as f64, 0),
            format!("{:.2}", self.seconds),
            opt(self.tasks_per_s, 0),
            opt(self.p50_us, 0),
            opt(self.p99_us, 0),
            opt(self.p999_us, 0),
            opt(self.max_us, 0),
            self.quern_ratio.map_or_else(|| "-".to_owned(), ratio),
            rss,
            match (self.server_cpu_s, self.client_cpu_s, self.other_cpu_s) {
                (None, None, None) => "-".into(),
                (s, c, o) => {
                    let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
                    format!("{}/{}/{}", f(s), f(c), f(o))
                }
            },
            opt(self.server_cpu_us_per_task(), 1),
            self.busiest_thread
                .as_ref()
                .map_or_else(|| "-".to_owned(), |(name, busy)| format!("{name} {:.0}%", busy * 100.0)),
            self.note_with_postgres(),
        ]
    }

    /// The note, with PostgreSQL's CPU and WAL per task when measured.
    fn note_with_postgres(&self) -> String {
        match (self.pg_cpu_us_per_task, self.wal_bytes_per_task) {
            (Some(cpu), Some(wal)) => {
                let sep = if self.note.is_empty() { "" } else { "; " };
                format!("{}{sep}PostgreSQL {} µs CPU, {} B WAL per task", self.note, group(cpu, 0), group(wal, 0))
            }
            _ => self.note.clone(),
        }
    }
}

/// The share of the machine's CPU that other processes may use during a
/// measurement before it counts as disturbed (at least [`DISTURBED_FLOOR_S`]
/// CPU seconds, since /proc counts in 10 ms ticks).
pub const DISTURBED_SHARE: f64 = 0.05;
/// See [`DISTURBED_SHARE`].
pub const DISTURBED_FLOOR_S: f64 = 0.05;

impl Row {
    /// Did other processes take a noticeable share of the `nproc` CPUs
    /// while this figure was measured?
    pub fn disturbed(&self, nproc: usize) -> bool {
        #[allow(clippy::cast_precision_loss)]
        let allowed = (DISTURBED_SHARE * self.seconds * nproc as f64).max(DISTURBED_FLOOR_S);
        self.other_cpu_s.is_some_and(|o| o > allowed)
    }
}

/// For repeated runs: each figure from the run whose value is the median
/// (throughput where there is one, else p50 latency, else RSS) among the
/// runs that other processes did not disturb (among all runs when every run
/// was disturbed), with the spread of all runs in its note. Rows are matched
/// by scenario and variant.
pub fn median_of(runs: Vec<Vec<Row>>, nproc: usize) -> Vec<Row> {
    let n = runs.len();
    let mut runs = runs.into_iter();
    let Some(first) = runs.next() else { return Vec::new() };
    let mut groups: Vec<Vec<Row>> = first.into_iter().map(|r| vec![r]).collect();
    for run in runs {
        for row in run {
            if let Some(g) = groups.iter_mut().find(|g| g[0].scenario == row.scenario && g[0].variant == row.variant) {
                g.push(row);
            }
        }
    }
    groups
        .into_iter()
        .map(|mut g| {
            let key = |r: &Row| r.tasks_per_s.or(r.p50_us).or(r.rss_mb).unwrap_or(0.0);
            g.sort_by(|a, b| key(a).total_cmp(&key(b)));
            let (lo, hi) = (key(&g[0]), key(&g[g.len() - 1]));
            let what = match (g[0].tasks_per_s, g[0].p50_us) {
                (Some(_), _) => "tasks/s",
                (None, Some(_)) => "p50 µs",
                (None, None) => "RSS MB",
            };
            let clean: Vec<usize> = (0..g.len()).filter(|&i| !g[i].disturbed(nproc)).collect();
            let (pick, how) = match clean.len() {
                0 if n == 1 => (0, "disturbed by other processes".to_owned()),
                0 => (g.len() / 2, format!("median of {n}, all disturbed by other processes")),
                k if k == n && n == 1 => (0, String::new()),
                k if k == n => (g.len() / 2, format!("median of {n}")),
                k => (clean[k / 2], format!("median of the {k} undisturbed of {n}")),
            };
            let mut row = g.swap_remove(pick);
            let spread = if n > 1 { format!("{how}: {what} {}–{}", group(lo, 0), group(hi, 0)) } else { how };
            row.note = match (spread.is_empty(), row.note.is_empty()) {
                (true, _) => row.note,
                (false, true) => spread,
                (false, false) => format!("{spread}; {}", row.note),
            };
            row
        })
        .collect()
}

/// `1234567.8` → `1,234,568` (with `digits` decimals).
pub(crate) fn group(v: f64, digits: usize) -> String {
    let s = format!("{v:.digits$}");
    let (int, frac) = s.split_once('.').map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, int) = int.strip_prefix('-').map_or(("", int), |i| ("-", i));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

/// A ratio as the table shows it: `12×`, `2.4×`, `0.81×`.
fn ratio(r: f64) -> String {
    match r {
        r if r >= 10.0 => format!("{}×", group(r, 0)),
        r if r >= 1.0 => format!("{r:.1}×"),
        r => format!("{r:.2}×"),
    }
}

const COLUMNS: usize = 16;
/// The columns holding numbers, right-aligned.
const NUMERIC: std::ops::Range<usize> = 3..14;

const HEADERS: [&str; COLUMNS] = [
    "system",
    "scenario",
    "variant",
    "tasks",
    "seconds",
    "tasks/s",
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "max µs",
    "Quern ×",
    "RSS MB (peak)",
    "CPU s srv/cli/other",
    "srv µs/task",
    "busiest srv thread",
    "note",
];

/// The rows as an aligned text table (numbers right-aligned).
pub fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; COLUMNS]> = rows.iter().map(Row::cells).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String; COLUMNS]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            if i > 0 {
                s.push_str("  ");
            }
            if NUMERIC.contains(&i) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else if i == COLUMNS - 1 {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", line(&HEADERS.map(str::to_owned)));
    let _ = writeln!(out, "{}", line(&widths.map(|w| "-".repeat(w))));
    for row in &cells {
        let _ = writeln!(out, "{}", line(row));
    }
    out
}

/// The rows as a Markdown table, for docs/performance.md.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(HEADERS.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.cells().join(" | "));
    }
    out
}

/// CPU time used so far by the server (when the harness started it) and
/// by the harness itself.
#[derive(Debug, Clone)]
pub struct Cpu {
    /// The server's user + system time.
    pub server: Option<Duration>,
    /// The harness's user + system time.
    pub client: Duration,
    /// Busy time of all CPUs of the machine (/proc/stat), when readable.
    pub machine: Option<Duration>,
    /// Each server thread's CPU time: (thread id, name, time).
    pub server_threads: Vec<(u32, String, Duration)>,
    /// PostgreSQL's use so far, when the servers run on it.
    pub postgres: Option<crate::server::PgUse>,
    /// When the snapshot was taken.
    pub at: std::time::Instant,
}

/// The shortest measurement for which a thread's busy share is reported.
const MIN_THREAD_WINDOW_S: f64 = 0.25;

impl Cpu {
    /// The server thread that used the most CPU between `self` and `later`,
    /// with the share of the wall time it was busy (1.0 = a whole core).
    pub fn busiest_thread(&self, later: &Self) -> Option<(String, f64)> {
        let wall = later.at.saturating_duration_since(self.at).as_secs_f64();
        // /proc counts CPU in 10 ms ticks: a shorter window says nothing.
        if wall < MIN_THREAD_WINDOW_S {
            return None;
        }
        later
            .server_threads
            .iter()
            .map(|(tid, name, t)| {
                let before = self.server_threads.iter().find(|(b, _, _)| b == tid).map_or(Duration::ZERO, |b| b.2);
                (name, t.saturating_sub(before))
            })
            .max_by_key(|(_, d)| *d)
            .map(|(name, d)| (name.clone(), d.as_secs_f64() / wall))
    }
}

/// The machine and build a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// `MemTotal` in MiB.
    pub ram_mb: u64,
    /// Kernel release.
    pub kernel: String,
    /// 1-, 5- and 15-minute load averages when the run started.
    pub load_at_start: String,
    /// `git rev-parse --short HEAD` of the working directory, with `+dirty`
    /// when the tree has changes (see [`ServerBin`] for the binary itself).
    pub quern_commit: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_at_unix: u64,
}

impl Machine {
    /// Reads what it can; unknown fields say so rather than fail the run.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
            .unwrap_or("unknown")
            .to_owned();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_mb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load_at_start = loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let mut quern_commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        if git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()) {
            quern_commit.push_str("+dirty");
        }
        Self {
            nproc: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            cpu,
            ram_mb,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            load_at_start,
            quern_commit,
            started_at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// One line for the top of the table.
    pub fn summary(&self) -> String {
        format!(
            "{} × {} · {} MiB RAM · kernel {} · load {} · quern {}",
            self.nproc, self.cpu, self.ram_mb, self.kernel, self.load_at_start, self.quern_commit
        )
    }
}

/// The JSON file of a run.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Where it ran.
    pub machine: &'a Machine,
    /// `normal` or `strict` (or `postgres`, or `external` against a given URL).
    pub durability: &'a str,
    /// The servers' store: `sqlite (normal)`, `postgres, 2 nodes`, or
    /// `external`.
    pub storage: &'a str,
    /// Whether the seconds-long smoke settings were used.
    pub quick: bool,
    /// Runs of the suite; each row is its median run's.
    pub runs: usize,
    /// Every figure.
    pub rows: &'a [Row],
    /// Versions of the peers that ran, when their rows were merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_versions: Option<&'a serde_json::Value>,
    /// The server binary the harness started, when it started one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_bin: Option<&'a ServerBin>,
}

/// Which server binary ran: `quern_commit` is the working directory's, and a
/// binary given by `--server-bin` may have been built from another tree.
#[derive(Debug, Clone, Serialize)]
pub struct ServerBin {
    /// Its path.
    pub path: String,
    /// When it was last modified (built), in seconds since the Unix epoch.
    pub modified_unix: Option<u64>,
}

impl ServerBin {
    /// Describes the binary at `path`.
    pub fn probe(path: &Path) -> Self {
        let modified_unix = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        Self { path: path.display().to_string(), modified_unix }
    }
}

impl Report<'_> {
    /// Writes the report as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(file), self)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Row, group, median_of, ratio, table};

    #[test]
    fn median_row_with_spread() {
        let runs = [3.0, 1.0, 2.0].map(|s| vec![Row::throughput("e2e", "b", 100, s)]).to_vec();
        let rows = median_of(runs, 2);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].tasks_per_s, Some(50.0));
        assert!(rows[0].note.starts_with("median of 3: tasks/s 33–100"), "{}", rows[0].note);
    }

    #[test]
    fn disturbed_runs_are_left_out() {
        let runs = [(1.0, 0.0), (2.0, 1.5), (4.0, 0.0), (5.0, 0.0), (0.5, 0.9)]
            .map(|(s, other)| {
                let mut r = Row::throughput("e2e", "b", 100, s);
                r.other_cpu_s = Some(other);
                vec![r]
            })
            .to_vec();
        let rows = median_of(runs, 2);
        // Undisturbed: 100, 25, 20 tasks/s; their median is 25.
        assert_eq!(rows[0].tasks_per_s, Some(25.0));
        assert!(rows[0].note.starts_with("median of the 3 undisturbed of 5: tasks/s 20–200"), "{}", rows[0].note);
    }

    #[test]
    fn grouping() {
        assert_eq!(group(0.0, 0), "0");
        assert_eq!(group(999.0, 0), "999");
        assert_eq!(group(1000.0, 0), "1,000");
        assert_eq!(group(1_234_567.25, 1), "1,234,567.2");
        assert_eq!(group(-12_345.0, 0), "-12,345");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(101.4), "101×");
        assert_eq!(ratio(8.04), "8.0×");
        assert_eq!(ratio(0.814), "0.81×");
    }

    #[test]
    fn table_aligns() {
        let rows = vec![Row::throughput("e2e", "batched", 100_000, 2.0), Row::new("idle", "")];
        let t = table(&rows);
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].contains("100,000") && lines[2].contains("50,000"));
    }
}
