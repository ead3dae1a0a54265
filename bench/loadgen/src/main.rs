//! loadgen: a memcached text-protocol load generator, a null server, and
//! an idle-connection holder. See USAGE below and bench/README.md.

mod client;
mod null;
mod sys;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage:
  loadgen run  [options]     drive load, print a summary and a RESULT json line
  loadgen null [options]     serve canned replies (the loopback ceiling)
  loadgen idle [options]     hold idle connections open

run options (defaults in brackets):
  --server ADDR        server address [127.0.0.1:11211]
  --conns N            connections [50]
  --duration SECS      measured interval; 0 = preload only, then exit [5]
  --warmup SECS        unmeasured run before it [1]
  --keys N             key space: key:0..N-1, zero-padded [100000]
  --key-size N         bytes per key, 'key:' included [11]
  --value-size N       bytes per value [100]
  --get-ratio F        fraction of requests that are gets, 0..1 [1.0]
  --multiget N         keys per get [1]
  --pipeline N         requests per batch (one write, latency per batch) [1]
  --preload            set every key once before warming up
  --preload-depth N    sets per batch while preloading [64]
  --server-pid PID     report server CPU (utime+stime) per request
  --watch-cpus LIST    report busy/steal of these CPUs (e.g. 0,1)
  --seed N             random seed [1]
  --rate R             batches per second over all connections, paced
                       (0: each connection's next as soon as answered) [0]

null options:
  --listen ADDR        [127.0.0.1:11311]
  --value-size N       bytes of the canned value [100]
  --miss               answer gets with END only
  --lifetime SECS      exit after this long [1800]

idle options:
  --server ADDR        [127.0.0.1:11211]
  --conns N            connections to open [10000]
  --hold SECS          hold them this long at most, or until stdin closes [60]
  prints 'READY <n>' once every connection has had a reply to 'version'
";

struct Args {
    vals: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    fn parse(argv: &[String], flags: &[&str]) -> Result<Args, String> {
        let mut a = Args {
            vals: HashMap::new(),
            flags: Vec::new(),
        };
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument '{arg}'"));
            };
            if let Some((k, v)) = name.split_once('=') {
                a.vals.insert(k.into(), v.into());
            } else if flags.contains(&name) {
                a.flags.push(name.into());
            } else {
                let v = it.next().ok_or(format!("--{name} needs a value"))?;
                a.vals.insert(name.into(), v.clone());
            }
        }
        Ok(a)
    }

    fn get<T: std::str::FromStr>(&mut self, name: &str, default: T) -> Result<T, String> {
        match self.vals.remove(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("bad value for --{name}: '{v}'")),
        }
    }

    fn flag(&mut self, name: &str) -> bool {
        let had = self.flags.iter().any(|f| f == name);
        self.flags.retain(|f| f != name);
        had
    }

    fn done(self) -> Result<(), String> {
        match self.vals.keys().chain(self.flags.iter()).next() {
            Some(k) => Err(format!("unknown option --{k}")),
            None => Ok(()),
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first().map(String::as_str) {
        Some("run") => cmd_run(&argv[1..]),
        Some("null") => cmd_null(&argv[1..]),
        Some("idle") => cmd_idle(&argv[1..]),
        Some("-h") | Some("--help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("expected a command\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(2);
    }
}

fn cmd_run(argv: &[String]) -> Result<(), String> {
    let mut a = Args::parse(argv, &["preload"])?;
    let cfg = client::Config {
        server: a.get("server", "127.0.0.1:11211".to_string())?,
        conns: a.get("conns", 50usize)?.max(1),
        duration: a.get("duration", 5.0)?,
        warmup: a.get("warmup", 1.0)?,
        keys: a.get("keys", 100_000u64)?.max(1),
        key_size: a.get("key-size", 11usize)?,
        value_size: a.get("value-size", 100usize)?,
        get_ratio: a.get("get-ratio", 1.0f64)?,
        multiget: a.get("multiget", 1usize)?.max(1),
        pipeline: a.get("pipeline", 1usize)?.max(1),
        preload: a.flag("preload"),
        preload_depth: a.get("preload-depth", 64usize)?.max(1),
        server_pid: match a.get("server-pid", 0i32)? {
            0 => None,
            p => Some(p),
        },
        watch_cpus: a
            .get("watch-cpus", String::new())?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("bad cpu '{s}' in --watch-cpus"))
            })
            .collect::<Result<_, _>>()?,
        seed: a.get("seed", 1u64)?,
        rate: a.get("rate", 0.0f64)?,
    };
    a.done()?;
    let pipeline = cfg.pipeline;
    let report = client::run(&cfg)?;
    report.print(pipeline);
    Ok(())
}

fn cmd_null(argv: &[String]) -> Result<(), String> {
    let mut a = Args::parse(argv, &["miss"])?;
    let listen: String = a.get("listen", "127.0.0.1:11311".to_string())?;
    let value_size = a.get("value-size", 100usize)?;
    let lifetime = a.get("lifetime", 1800.0)?;
    let miss = a.flag("miss");
    a.done()?;
    null::serve(&listen, value_size, miss, lifetime).map_err(|e| e.to_string())
}

fn cmd_idle(argv: &[String]) -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    let mut a = Args::parse(argv, &[])?;
    let server: String = a.get("server", "127.0.0.1:11211".to_string())?;
    let n = a.get("conns", 10_000usize)?;
    let hold = a.get("hold", 60.0)?;
    a.done()?;
    let limit = sys::raise_nofile();
    if (limit as usize) < n + 16 {
        return Err(format!(
            "descriptor limit {limit} is too low for {n} connections"
        ));
    }
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(&server).map_err(|e| format!("connection {i}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"version\r\n").map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("connection {i}: {e}"))?;
        if !line.starts_with("VERSION ") {
            return Err(format!("connection {i}: unexpected reply {line:?}"));
        }
        held.push(r.into_inner());
    }
    println!("READY {}", held.len());
    std::io::stdout().flush().ok();
    let end = Instant::now() + Duration::from_secs_f64(hold);
    // Until stdin closes (the driver is done measuring) or time is up.
    let mut stdin = [0u8; 64];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || !sys::poll_readable(0, left.as_millis().min(1000) as i32) {
            if left.is_zero() {
                break;
            }
            continue;
        }
        // SAFETY: reads into a local buffer.
        let r = unsafe { libc::read(0, stdin.as_mut_ptr() as *mut libc::c_void, stdin.len()) };
        if r <= 0 {
            break;
        }
    }
    drop(held);
    Ok(())
}
