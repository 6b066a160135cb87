//! What /proc says about a process and about the machine: CPU time and resident memory.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::Context;

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User plus system CPU time of a process so far, in seconds (utime + stime of
/// /proc/<pid>/stat).
pub fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("no command name in {path}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `after_name` starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |index: usize| -> anyhow::Result<f64> {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
            .with_context(|| format!("no CPU time field {} in {path}", index + 3))
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

/// Current resident set size of a process in MiB (`VmRSS` of /proc/<pid>/status); the peak is
/// [`crate::results::peak_rss_mib`].
pub fn resident_mib(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib / 1024.0)
}

/// The machine's CPU counters (the `cpu` line of /proc/stat), to say how busy all cores were
/// over a window: the control plane, the operator and everyone else share them.
#[derive(Clone, Copy, Debug)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    pub fn now() -> anyhow::Result<Self> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let counters: Vec<u64> = stat
            .lines()
            .find_map(|line| line.strip_prefix("cpu "))
            .context("no cpu line in /proc/stat")?
            .split_whitespace()
            .filter_map(|field| field.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let total: u64 = counters.iter().take(8).sum();
        let idle = counters.get(3).copied().unwrap_or(0) + counters.get(4).copied().unwrap_or(0);
        Ok(Self {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    /// How many cores were busy on average between `earlier` and `self`.
    pub fn busy_cores_since(&self, earlier: &Self, cores: usize) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64 * cores as f64
    }
}

/// The local control plane's processes (`hack/envtest.sh` keeps their pid files in its state
/// directory, beside the kubeconfig it prints), by the name their CPU figure carries.
pub struct ControlPlane {
    components: Vec<(&'static str, u32)>,
}

impl ControlPlane {
    /// Finds what it can; a control plane that is not envtest's (no pid files) has no figures.
    pub fn beside(kubeconfig: &Path) -> Self {
        let state_dir = kubeconfig.parent().unwrap_or(Path::new("."));
        let wanted = [
            ("apiserver", "kube-apiserver"),
            ("etcd", "etcd"),
            // /proc/<pid>/comm is cut at 15 bytes.
            ("kcm", "kube-controller-manager"),
        ];
        let components = wanted
            .into_iter()
            .filter_map(|(figure, process)| {
                let pid_file = state_dir.join(format!("{process}.pid"));
                let pid: u32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                let short = &process[..process.len().min(15)];
                (comm.trim() == short).then_some((figure, pid))
            })
            .collect();
        Self { components }
    }

    pub fn is_empty(&self) -> bool {
        self.components.is_empty()
    }

    /// CPU seconds so far of each component, keyed by its figure name.
    pub fn cpu_seconds(&self) -> BTreeMap<&'static str, f64> {
        self.components
            .iter()
            .filter_map(|(figure, pid)| Some((*figure, process_cpu_seconds(*pid).ok()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {}
        assert!(process_cpu_seconds(pid).expect("CPU time of this process") > 0.0);
        assert!(resident_mib(pid).expect("RSS of this process") > 0.0);
    }

    #[test]
    fn machine_counters_grow() {
        let before = MachineCpu::now().expect("/proc/stat");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let after = MachineCpu::now().expect("/proc/stat");
        let busy = after.busy_cores_since(&before, 2);
        assert!((0.0..=2.0).contains(&busy), "{busy}");
    }
}
