//! What the benchmark reads from its tools, and the readers themselves: wrk's report,
//! curl's `--write-out` lines, `/proc/PID/stat` and bpftool's JSON. Pure functions of
//! text, tested below on captured output.

use anyhow::{Context as _, bail};
use serde::Serialize;

/// One wrk run's report (`wrk --latency`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WrkReport {
    /// Completed requests (`N requests in ...`).
    pub requests: u64,
    /// `Requests/sec:`.
    pub per_second: f64,
    /// The latency distribution's 50% and 99% lines, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Connect, read, write and timeout errors together (`Socket errors:`).
    pub socket_errors: u64,
    /// The same by kind: connect, read, write, timeout.
    pub socket_errors_by_kind: [u64; 4],
    /// `Non-2xx or 3xx responses:`.
    pub non_2xx: u64,
}

impl WrkReport {
    pub fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }
}

/// The number of requests wrk made, from its summary line (`123 requests in 5.00s,
/// 45.6MB read`); `None` without one.
pub fn wrk_request_count(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
}

/// Reads wrk's report. Every figure the benchmark uses must be there; error lines are
/// optional (wrk prints them only when there were errors).
pub fn parse_wrk(output: &str) -> anyhow::Result<WrkReport> {
    let line = |prefix: &str| {
        output
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
    };
    let second_field = |prefix: &str| {
        line(prefix)
            .and_then(|l| l.split_whitespace().nth(1))
            .with_context(|| format!("no `{prefix}` line in wrk's output:\n{output}"))
    };
    let requests = wrk_request_count(output)
        .with_context(|| format!("no request count in wrk's output:\n{output}"))?;
    let per_second = second_field("Requests/sec:")?
        .parse()
        .context("wrk's Requests/sec")?;
    let p50_ms = latency_ms(second_field("50%")?)?;
    let p99_ms = latency_ms(second_field("99%")?)?;
    // `Socket errors: connect 0, read 3, write 0, timeout 12`
    let mut socket_errors_by_kind = [0u64; 4];
    if let Some(l) = line("Socket errors:") {
        let counts = l
            .trim_start_matches("Socket errors:")
            .split(',')
            .map(|part| part.split_whitespace().nth(1).and_then(|n| n.parse().ok()));
        for (slot, count) in socket_errors_by_kind.iter_mut().zip(counts) {
            *slot = count.unwrap_or(0);
        }
    }
    let socket_errors = socket_errors_by_kind.iter().sum();
    let non_2xx = line("Non-2xx or 3xx responses:")
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    Ok(WrkReport {
        requests,
        per_second,
        p50_ms,
        p99_ms,
        socket_errors,
        socket_errors_by_kind,
        non_2xx,
    })
}

/// wrk's latency field (`812.00us`, `2.54ms`, `1.02s`, `1.50m`) in milliseconds.
pub fn latency_ms(field: &str) -> anyhow::Result<f64> {
    let (number, scale) = if let Some(n) = field.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = field.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = field.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = field.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        bail!("unknown latency unit in wrk's `{field}`")
    };
    Ok(number
        .parse::<f64>()
        .with_context(|| format!("wrk's latency `{field}`"))?
        * scale)
}

/// One transfer as curl reports it with `-w '%{http_code} %{size_download}
/// %{time_starttransfer} %{time_total}\n'`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurlTransfer {
    pub status: u16,
    pub bytes: u64,
    /// Seconds from the start of the transfer to its first response byte (connection
    /// set-up included when the transfer opened one).
    pub first_byte_s: f64,
    pub total_s: f64,
}

/// The `--write-out` format [`parse_curl`] reads, one line per transfer.
pub const CURL_WRITE_OUT: &str =
    "%{http_code} %{size_download} %{time_starttransfer} %{time_total}\\n";

/// Reads one [`CURL_WRITE_OUT`] line per transfer.
pub fn parse_curl(output: &str) -> anyhow::Result<Vec<CurlTransfer>> {
    output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [status, bytes, first, total] = f[..] else {
                bail!("curl line `{l}` is not `code bytes starttransfer total`");
            };
            Ok(CurlTransfer {
                status: status.parse().context("curl's http_code")?,
                bytes: bytes.parse().context("curl's size_download")?,
                first_byte_s: first.parse().context("curl's time_starttransfer")?,
                total_s: total.parse().context("curl's time_total")?,
            })
        })
        .collect()
}

/// A process's CPU time so far, from `/proc/PID/stat`, in clock ticks: all its threads,
/// living and gone, together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessTicks {
    pub user: u64,
    pub system: u64,
}

/// Reads `utime` and `stime` (fields 14 and 15, proc(5)) from a `/proc/PID/stat` line.
/// The command name (field 2) is in parentheses and may hold spaces and parentheses,
/// so the fields are counted from the last `)`.
pub fn parse_proc_stat(stat: &str) -> anyhow::Result<ProcessTicks> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no `)` after the command name in /proc/PID/stat")?;
    // `rest` starts at field 3 (state): utime is field 14, so index 11 here.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize, name: &str| -> anyhow::Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("/proc/PID/stat too short for {name}"))?
            .parse()
            .with_context(|| format!("/proc/PID/stat {name}"))
    };
    Ok(ProcessTicks {
        user: field(11, "utime")?,
        system: field(12, "stime")?,
    })
}

/// The whole host's CPU time so far, from the `cpu` line of `/proc/stat`, in clock ticks
/// summed over every CPU: `busy` is everything but `idle` and `iowait`. In the lab every
/// namespace (client, front-end, back-ends, the bridge and router between them) runs on
/// these CPUs, so the busy time per request is what one request costs the machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostTicks {
    pub busy: u64,
    pub total: u64,
}

impl HostTicks {
    /// The busy ticks and all ticks since `before`.
    pub fn since(self, before: HostTicks) -> HostTicks {
        HostTicks {
            busy: self.busy.saturating_sub(before.busy),
            total: self.total.saturating_sub(before.total),
        }
    }
}

/// Reads the aggregate `cpu` line of `/proc/stat` (proc(5)): user, nice, system, idle,
/// iowait, irq, softirq, steal. `guest` and `guest_nice` follow but are already counted
/// in user and nice, so they are left out.
pub fn parse_host_stat(stat: &str) -> anyhow::Result<HostTicks> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no aggregate `cpu` line in /proc/stat")?;
    let ticks = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse::<u64>().context("/proc/stat: a `cpu` field"))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        bail!(
            "/proc/stat: {} fields on the `cpu` line, 8 needed",
            ticks.len()
        );
    };
    let busy = user + nice + system + irq + softirq + steal;
    Ok(HostTicks {
        busy,
        total: busy + idle + iowait,
    })
}

/// A thread's time on a CPU, in nanoseconds: the first field of
/// `/proc/PID/task/TID/schedstat` (the scheduler's `sum_exec_runtime`, kept whatever the
/// kernel's configuration, unlike the tick-sampled `utime` and `stime`).
pub fn parse_schedstat(schedstat: &str) -> anyhow::Result<u64> {
    schedstat
        .split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()
        .context("schedstat's run time")
}

/// The ids of the eBPF programs attached to a namespace's interfaces, from `bpftool -j
/// net show` run inside it: XDP (one program, or several under `multi_attachments`) and
/// tc. bpftool 7.1 does not list tcx links; Baton's front-end uses none.
pub fn parse_net_show(json: &str) -> anyhow::Result<Vec<u32>> {
    let value: serde_json::Value =
        serde_json::from_str(json).context("bpftool net show: not JSON")?;
    let mut ids = Vec::new();
    let objects = value
        .as_array()
        .map_or_else(|| vec![&value], |a| a.iter().collect());
    for object in objects {
        for hook in ["xdp", "tc"] {
            for entry in object[hook].as_array().into_iter().flatten() {
                let attachments = entry["multi_attachments"]
                    .as_array()
                    .map_or_else(|| vec![entry], |a| a.iter().collect());
                ids.extend(
                    attachments
                        .into_iter()
                        .filter_map(|a| a["id"].as_u64().or_else(|| a["prog_id"].as_u64()))
                        .filter_map(|id| u32::try_from(id).ok()),
                );
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// An eBPF program's cumulative run time and run count (the kernel counts them while
/// statistics are enabled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProgRunTime {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Reads `bpftool -j prog show id N`. bpftool leaves `run_time_ns` and `run_cnt` out
/// while they are zero.
pub fn parse_prog_show(json: &str) -> anyhow::Result<ProgRunTime> {
    let value: serde_json::Value =
        serde_json::from_str(json).context("bpftool prog show: not JSON")?;
    if value.get("id").is_none() {
        bail!("bpftool prog show: no program in `{json}`");
    }
    Ok(ProgRunTime {
        run_time_ns: value["run_time_ns"].as_u64().unwrap_or(0),
        run_cnt: value["run_cnt"].as_u64().unwrap_or(0),
    })
}

/// The median of `values` (the mean of the middle two for an even count), or `None`
/// for none. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Baton's handoffs and those the kernel decided, from its front-end's exit log: the
/// core's `handoffs_completed` (`event=frontend_stats`) and, of them, those the program
/// made itself that the core adopted (`kernel_handoffs_adopted`, `event=fastpath_stats`,
/// absent without the fast path). Not the program's own `handed_off_in_kernel`, which
/// counts every handoff the program made, a few more than the core completed (0.02% in
/// one run).
pub fn decisions_from_exit_log(log: &str) -> Option<super::report::Decisions> {
    let value = |event: &str, key: &str| -> Option<u64> {
        log.lines()
            .filter(|l| l.contains(&format!(" event={event} ")))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            })?
            .parse()
            .ok()
    };
    Some(super::report::Decisions {
        handoffs: value("frontend_stats", "handoffs_completed")?,
        in_kernel: value("fastpath_stats", "kernel_handoffs_adopted").unwrap_or(0),
    })
}

#[cfg(test)]
mod frame_tests {
    use super::*;

    #[test]
    fn tx_packets_sum_the_ports_not_the_bridge_or_loopback() {
        let json = r#"[
            {"ifname":"lo","link_type":"loopback","stats64":{"tx":{"packets":7}}},
            {"ifname":"br","link_type":"ether","linkinfo":{"info_kind":"bridge"},"stats64":{"tx":{"packets":100}}},
            {"ifname":"p-fe","link_type":"ether","linkinfo":{"info_kind":"veth"},"stats64":{"tx":{"packets":30}}},
            {"ifname":"p-be1","link_type":"ether","linkinfo":{"info_kind":"veth"},"stats64":{"tx":{"packets":12}}}
        ]"#;
        assert_eq!(parse_tx_packets(json).unwrap(), 42);
        assert!(parse_tx_packets("{}").is_err());
        assert!(parse_tx_packets(r#"[{"ifname":"x"}]"#).is_err());
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn decisions_are_read_from_the_front_ends_exit_log() {
        let log = "ts=1 level=info event=ready interface=eth0\n\
                   ts=2 level=info event=frontend_stats packets_received=9 handoffs_completed=120 handoffs_started=121\n\
                   ts=2 level=info event=fastpath_stats flows_installed=3 kernel_handoffs_adopted=100 kernel_handoffs_refused=0\n\
                   ts=2 level=info event=fastpath_counters forwarded=50 handed_off_in_kernel=103 pass_control=3\n";
        assert_eq!(
            decisions_from_exit_log(log),
            Some(super::super::report::Decisions {
                handoffs: 120,
                in_kernel: 100
            })
        );
        // Without the fast path: every handoff the daemon's.
        let slow = "ts=2 level=info event=frontend_stats handoffs_completed=7\n";
        assert_eq!(
            decisions_from_exit_log(slow),
            Some(super::super::report::Decisions {
                handoffs: 7,
                in_kernel: 0
            })
        );
        assert_eq!(decisions_from_exit_log("no stats"), None);
    }
    use super::*;

    const WRK_CLEAN: &str = "Running 3s test @ http://198.18.2.1/files/1K.bin
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.05ms    5.61ms  55.94ms   87.83%
    Req/Sec     2.63k     1.08k    5.64k    73.33%
  Latency Distribution
     50%    4.56ms
     75%    8.17ms
     90%   11.89ms
     99%  812.00us
  15977 requests in 3.08s, 19.73MB read
Requests/sec:   5193.87
Transfer/sec:      6.41MB
";

    #[test]
    fn wrk_report_is_read_whole() {
        let r = parse_wrk(WRK_CLEAN).unwrap();
        assert_eq!(r.requests, 15_977);
        assert!((r.per_second - 5193.87).abs() < 1e-9);
        assert!((r.p50_ms - 4.56).abs() < 1e-9);
        assert!((r.p99_ms - 0.812).abs() < 1e-9);
        assert_eq!(r.errors(), 0);
    }

    #[test]
    fn wrk_errors_are_summed() {
        let dirty = format!(
            "{WRK_CLEAN}  Socket errors: connect 1, read 3, write 0, timeout 12\n  Non-2xx or 3xx responses: 7\n"
        );
        let r = parse_wrk(&dirty).unwrap();
        assert_eq!((r.socket_errors, r.non_2xx, r.errors()), (16, 7, 23));
        assert_eq!(r.socket_errors_by_kind, [1, 3, 0, 12]);
    }

    #[test]
    fn wrk_output_without_figures_is_an_error() {
        assert!(parse_wrk("unable to connect to 198.18.2.1:http Connection refused").is_err());
        let no_latency = WRK_CLEAN.replace("     99%  812.00us\n", "");
        assert!(parse_wrk(&no_latency).is_err());
    }

    #[test]
    fn wrk_latency_units() {
        assert_eq!(latency_ms("1.50s").unwrap(), 1500.0);
        assert_eq!(latency_ms("2.00m").unwrap(), 120_000.0);
        assert!((latency_ms("250.00us").unwrap() - 0.25).abs() < 1e-12);
        assert!(latency_ms("3h").is_err());
    }

    #[test]
    fn curl_lines() {
        let t =
            parse_curl("200 1024 0.000322 0.000401\n200 104857600 0.000218 0.104203\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].status, 200);
        assert_eq!(t[1].bytes, 104_857_600);
        assert!((t[1].total_s - 0.104203).abs() < 1e-12);
        assert!(parse_curl("000 0 0.0\n").is_err());
    }

    #[test]
    fn proc_stat_counts_from_the_last_parenthesis() {
        // Captured from a `baton frontend`, with the name made awkward on purpose.
        let stat = "4242 (bat on) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 731 2950 0 0 20 0 1 0 1054343 3133440 414 18446744073709551615";
        assert_eq!(
            parse_proc_stat(stat).unwrap(),
            ProcessTicks {
                user: 731,
                system: 2950
            }
        );
        assert!(parse_proc_stat("4242 (baton) S 1").is_err());
    }

    #[test]
    fn host_stat_counts_all_but_idle_and_iowait_as_busy() {
        // Captured on the 2-core machine; guest fields are part of user already.
        let stat = "cpu  1094486 7619 835987 1835584 6919 0 191968 1014 50 7\n\
                    cpu0 547243 3809 417993 917792 3459 0 95984 507 0 0\nintr 1 2 3\n";
        let busy = 1094486 + 7619 + 835987 + 191968 + 1014;
        assert_eq!(
            parse_host_stat(stat).unwrap(),
            HostTicks {
                busy,
                total: busy + 1835584 + 6919,
            }
        );
        let later = HostTicks {
            busy: busy + 150,
            total: busy + 1835584 + 6919 + 200,
        };
        assert_eq!(
            later.since(parse_host_stat(stat).unwrap()),
            HostTicks {
                busy: 150,
                total: 200
            }
        );
        assert!(parse_host_stat("cpu0 1 2 3 4 5 6 7 8\n").is_err());
        assert!(parse_host_stat("cpu  1 2 3\n").is_err());
    }

    #[test]
    fn schedstat_run_time() {
        assert_eq!(
            parse_schedstat("980127406 591468912 230\n").unwrap(),
            980_127_406
        );
        assert!(parse_schedstat("").is_err());
    }

    #[test]
    fn net_show_lists_xdp_and_tc_programs() {
        let fe = r#"[{"xdp":[{"devname":"eth0","ifindex":2,"mode":"driver","id":5539}],"tc":[],"flow_dissector":[]}]"#;
        assert_eq!(parse_net_show(fe).unwrap(), vec![5539]);
        let none = r#"[{"xdp":[],"tc":[],"flow_dissector":[]}]"#;
        assert!(parse_net_show(none).unwrap().is_empty());
        let multi = r#"[{"xdp":[{"devname":"eth0","ifindex":2,"multi_attachments":[{"mode":"generic","id":7},{"mode":"driver","id":8}]}],
            "tc":[{"devname":"eth0","ifindex":2,"kind":"clsact/ingress","name":"backend_ingress","id":9}]}]"#;
        assert_eq!(parse_net_show(multi).unwrap(), vec![7, 8, 9]);
        assert!(parse_net_show("Error: ...").is_err());
    }

    #[test]
    fn prog_show_run_time_is_zero_until_counted() {
        let quiet = r#"{"id":5575,"type":"xdp","name":"lab_xdp_pass","tag":"614b434cd8324ecc","gpl_compatible":true,"loaded_at":1795807533,"uid":0,"bytes_xlated":16,"jited":true,"bytes_jited":23,"bytes_memlock":4096,"btf_id":8798}"#;
        assert_eq!(parse_prog_show(quiet).unwrap(), ProgRunTime::default());
        let counted = r#"{"id":5539,"type":"xdp","name":"frontend_forward","run_time_ns":123456789,"run_cnt":4242}"#;
        assert_eq!(
            parse_prog_show(counted).unwrap(),
            ProgRunTime {
                run_time_ns: 123_456_789,
                run_cnt: 4242
            }
        );
        assert!(
            parse_prog_show(r#"{"error":"get by id (5): No such file or directory"}"#).is_err()
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}

/// Packets sent (`stats64.tx.packets`) by every interface in `ip -j -s link show`'s output
/// except the loopback and bridge devices themselves: in the LAN's namespace, the frames
/// its bridge delivered out of its ports (each frame once per port it left by, which is
/// once for a unicast frame); in the client's, the frames it put on its link.
pub fn parse_tx_packets(json: &str) -> anyhow::Result<u64> {
    let links: serde_json::Value =
        serde_json::from_str(json).context("`ip -j -s link show`: not JSON")?;
    let links = links
        .as_array()
        .context("`ip -j -s link show`: not a list")?;
    let mut total = 0;
    for link in links {
        let name = link["ifname"].as_str().unwrap_or("");
        let kind = link["linkinfo"]["info_kind"].as_str().unwrap_or("");
        if name == "lo" || kind == "bridge" || link["link_type"].as_str() == Some("loopback") {
            continue;
        }
        total += link["stats64"]["tx"]["packets"]
            .as_u64()
            .with_context(|| format!("`ip -j -s link show`: no tx packets for {name}"))?;
    }
    Ok(total)
}
