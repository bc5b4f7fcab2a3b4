//! Pinning with `taskset`: the load generator and the servers under test
//! would otherwise share every core, and a ratio would count the
//! generator's share of the same cores against the server. The harness
//! (the generator, and its in-process baselines) keeps the first quarter of
//! the CPUs it may run on (one of two), and starts every server process —
//! the mesh, the echo server, the scale-out instances — on the rest.
//! PostgreSQL and the Kafka broker are not started by the harness and are
//! not pinned.

use std::sync::OnceLock;

/// Which CPUs the generator and the servers run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinning {
    generator: Vec<usize>,
    servers: Vec<usize>,
}

static PINNING: OnceLock<Pinning> = OnceLock::new();

impl Pinning {
    /// The split of `cpus` (the CPUs this process may use): none with fewer than two.
    pub fn of(cpus: &[usize]) -> Option<Self> {
        if cpus.len() < 2 {
            return None;
        }
        let (generator, servers) = cpus.split_at(cpus.len().div_ceil(4));
        Some(Self { generator: generator.to_vec(), servers: servers.to_vec() })
    }

    /// Pins this process to the generator's CPUs and remembers the split for
    /// [`Self::server_command`]. Must run before any thread is started: threads
    /// started later inherit the main thread's CPUs. Why not, when this
    /// process may use fewer than two CPUs or `taskset` failed.
    pub fn apply() -> Result<&'static Pinning, String> {
        let cpus = allowed_cpus().ok_or("cannot read Cpus_allowed_list from /proc/self/status")?;
        let pinning = Self::of(&cpus).ok_or_else(|| format!("only {} CPU to run on", cpus.len()))?;
        let status = std::process::Command::new("taskset")
            .args(["-p", "-c", &list(&pinning.generator), &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run taskset: {e}"))?;
        if !status.success() {
            return Err(format!("taskset exited with {status}"));
        }
        Ok(PINNING.get_or_init(|| pinning))
    }

    /// The split in force, if [`Self::apply`] pinned this process.
    pub fn current() -> Option<&'static Pinning> {
        PINNING.get()
    }

    /// A command that runs `program` on the servers' CPUs (`taskset -c`
    /// execs it, so the child's pid is the server's).
    pub fn server_command(&self, program: &std::path::Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("taskset");
        command.arg("-c").arg(list(&self.servers)).arg(program);
        command
    }

    /// How the run was pinned, for the report.
    pub fn describe(&self) -> String {
        format!(
            "Pinned with `taskset`: the load generator (and the in-process baselines) on CPU {}, the servers under test \
             (the mesh, the echo server, the scale-out instances) on CPU {}; PostgreSQL and the Kafka broker are not pinned.",
            list(&self.generator),
            list(&self.servers)
        )
    }
}

/// The CPUs this process may run on, from `/proc/self/status`.
fn allowed_cpus() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_list(line.trim())
}

/// A CPU list as `taskset -c` and the kernel write it: `0-3,5,7-8`.
fn parse_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => cpus.extend(first.parse::<usize>().ok()?..=last.parse::<usize>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

fn list(cpus: &[usize]) -> String {
    cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_read_as_the_kernel_writes_them() {
        assert_eq!(parse_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_list("0-3,5,7-8"), Some(vec![0, 1, 2, 3, 5, 7, 8]));
        assert_eq!(parse_list("4"), Some(vec![4]));
        assert_eq!(parse_list("0-x"), None);
    }

    #[test]
    fn the_generator_takes_a_quarter_and_the_servers_the_rest() {
        assert_eq!(Pinning::of(&[0]), None, "one CPU cannot be split");
        assert_eq!(Pinning::of(&[0, 1]), Some(Pinning { generator: vec![0], servers: vec![1] }));
        assert_eq!(Pinning::of(&[2, 3, 4, 5, 6]), Some(Pinning { generator: vec![2, 3], servers: vec![4, 5, 6] }));
        let eight: Vec<usize> = (0..8).collect();
        assert_eq!(Pinning::of(&eight), Some(Pinning { generator: vec![0, 1], servers: (2..8).collect() }));
    }
}
