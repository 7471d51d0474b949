//! Facts about this process from Linux's `/proc`, read at scrape time. Elsewhere (or when a
//! file cannot be read) the metric is left out rather than reported as zero.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports process times in USER_HZ ticks, which its ABI fixes at 100 per second (the
/// Prometheus client libraries rely on the same constant).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessFacts {
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub resident_peak_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
}

impl ProcessFacts {
    pub fn read() -> ProcessFacts {
        let read = |path| std::fs::read_to_string(path).ok();
        let mut facts = ProcessFacts::default();
        if let Some(status) = read("/proc/self/status") {
            facts.resident_bytes = status_kib(&status, "VmRSS");
            facts.resident_peak_bytes = status_kib(&status, "VmHWM");
            facts.virtual_bytes = status_kib(&status, "VmSize");
            facts.threads = status_field(&status, "Threads").and_then(|v| v.parse().ok());
        }
        if let Some(stat) = read("/proc/self/stat") {
            let times = stat_times(&stat);
            facts.cpu_seconds = times.map(|(cpu, _)| cpu);
            let boot = read("/proc/stat").as_deref().and_then(boot_time);
            facts.start_time_seconds = times.zip(boot).map(|((_, start), boot)| boot + start);
        }
        facts.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        facts
    }
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

/// A `/proc/self/status` figure given in kB (which there means KiB), in bytes.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let value = status_field(status, name)?;
    let kib: u64 = value.strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// CPU seconds (user + system) and start time in seconds after boot, from `/proc/self/stat`.
/// The command name (field 2) may hold spaces and parentheses: fields are counted from the last
/// `)`.
fn stat_times(stat: &str) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime 15, starttime 22.
    let field =
        |n: usize| -> Option<f64> { fields.get(n - 3)?.parse::<u64>().ok().map(|v| v as f64) };
    let cpu = (field(14)? + field(15)?) / TICKS_PER_SECOND;
    let start = field(22)? / TICKS_PER_SECOND;
    Some((cpu, start))
}

/// Boot time in seconds since the epoch, from `/proc/stat`.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|v| v as f64)
}

/// The standard `process_*` metrics.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        ProcessFacts::read().encode(encoder)
    }
}

impl ProcessFacts {
    pub fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        if let Some(v) = self.cpu_seconds {
            let counter = ConstCounter::new(v);
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent by the process, in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(m)?;
        }
        if let Some(v) = self.start_time_seconds {
            let gauge = ConstGauge::new(v);
            let m = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(m)?;
        }
        let gauges: [(&str, &str, Option<u64>); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                self.resident_bytes,
            ),
            (
                "process_resident_memory_max_bytes",
                "Peak resident memory size since the process started, in bytes",
                self.resident_peak_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size, in bytes",
                self.virtual_bytes,
            ),
            ("process_threads", "Threads of the process", self.threads),
            ("process_open_fds", "Open file descriptors", self.open_fds),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let gauge = ConstGauge::new(v);
                let m = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                gauge.encode(m)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tlinkreg\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  912340 kB\nVmSize:\t  850000 kB\nVmHWM:\t   60000 kB\nVmRSS:\t   51200 kB\n\
        Threads:\t17\n";

    #[test]
    fn status_figures_are_read_in_bytes() {
        assert_eq!(status_kib(STATUS, "VmRSS"), Some(51200 * 1024));
        assert_eq!(status_kib(STATUS, "VmHWM"), Some(60000 * 1024));
        assert_eq!(status_kib(STATUS, "VmSize"), Some(850000 * 1024));
        assert_eq!(status_field(STATUS, "Threads"), Some("17"));
        assert_eq!(status_kib(STATUS, "VmSwap"), None);
        // Not a kB figure.
        assert_eq!(status_kib(STATUS, "Threads"), None);
    }

    #[test]
    fn stat_times_count_fields_after_the_command_name() {
        // A command name with a space and a parenthesis must not shift the fields.
        let stat = "4242 (link reg) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
            250 50 0 0 20 0 17 0 12345 850000000 12800 18446744073709551615";
        let (cpu, start) = stat_times(stat).unwrap();
        assert!((cpu - 3.0).abs() < 1e-9, "{cpu}");
        assert!((start - 123.45).abs() < 1e-9, "{start}");
        assert_eq!(stat_times("garbage"), None);
        assert_eq!(stat_times("1 (x) S 1 2"), None);
    }

    #[test]
    fn boot_time_is_btime() {
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1700000000\nprocesses 7\n";
        assert_eq!(boot_time(stat), Some(1_700_000_000.0));
        assert_eq!(boot_time("cpu 1\n"), None);
    }

    #[derive(Debug)]
    struct Fixed(ProcessFacts);

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
            self.0.encode(encoder)
        }
    }

    #[test]
    fn known_facts_are_encoded_and_unknown_ones_left_out() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Fixed(ProcessFacts {
            cpu_seconds: Some(1.5),
            resident_bytes: Some(4096),
            ..ProcessFacts::default()
        })));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("\nprocess_cpu_seconds_total 1.5\n"), "{text}");
        assert!(
            text.contains("\nprocess_resident_memory_bytes 4096\n"),
            "{text}"
        );
        assert!(!text.contains("process_threads"), "{text}");
        assert!(!text.contains("process_start_time_seconds"), "{text}");
    }

    #[test]
    fn this_process_is_described_on_linux() {
        if cfg!(target_os = "linux") {
            let facts = ProcessFacts::read();
            assert!(facts.resident_bytes.is_some_and(|v| v > 0), "{facts:?}");
            assert!(facts.threads.is_some_and(|v| v >= 1), "{facts:?}");
            assert!(facts.open_fds.is_some_and(|v| v >= 1), "{facts:?}");
            assert!(facts.cpu_seconds.is_some(), "{facts:?}");
            assert!(
                facts.start_time_seconds.is_some_and(|v| v > 1e9),
                "{facts:?}"
            );
        }
    }
}
