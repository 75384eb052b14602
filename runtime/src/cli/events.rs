//! `husk events [--stats] [--interval D] ID`: runc's events, from the agent's cgroup numbers
//! in the guest. With --stats, one `stats` event; without, a `stats` event per interval and an
//! `oom` event (`{"type":"oom","id":ID}`) for each OOM kill in the container's cgroup from
//! now on, until the container stops.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use super::Ctx;
use crate::control::{self, Request};
use crate::state::Status;

/// runc events' flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one stats event and exit.
    #[arg(long)]
    pub stats: bool,
    /// Time between stats events (Go duration: 5s, 500ms, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Container id.
    pub id: String,
}

/// Parses a Go-style duration (`500ms`, `5s`, `1m`, `1h`; a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}")),
    };
    if secs <= 0.0 {
        return Err(format!("duration must be positive: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Prints an `oom` event for each OOM kill after the first answer, until the container
/// stops or the supervisor goes away.
fn watch_oom(sock: PathBuf, container: Option<String>, id: String) {
    let ask = |after| {
        control::call_in(
            &sock,
            container.as_deref(),
            &Request::Oom { after },
            &[],
            Some(Duration::from_secs(60)),
        )
    };
    let Ok(first) = ask(None) else { return };
    let mut seen = first.oom_count.unwrap_or(0);
    while let Ok(r) = ask(Some(seen)) {
        let count = r.oom_count.unwrap_or(seen);
        for _ in seen..count {
            // runc's field order.
            println!(
                r#"{{"type":"oom","id":{}}}"#,
                serde_json::Value::from(id.as_str())
            );
        }
        seen = count.max(seen);
        if r.stopped {
            return;
        }
    }
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    let (sock, container) = ctx.root.read_record(&a.id)?.control(&ctx.root);
    if !a.stats {
        let (sock, container, id) = (sock.clone(), container.clone(), a.id.clone());
        std::thread::Builder::new()
            .name("oom".into())
            .spawn(move || watch_oom(sock, container, id))?;
    }
    loop {
        let rec = ctx.root.read_record(&a.id)?;
        if ctx.root.status(&rec) == Status::Stopped {
            if a.stats {
                bail!("container with id {} is not running", a.id);
            }
            return Ok(0);
        }
        let resp = control::call_in(
            &sock,
            container.as_deref(),
            &Request::Stats,
            &[],
            Some(Duration::from_secs(30)),
        )?;
        let event = serde_json::json!({
            "type": "stats",
            "id": a.id,
            "data": resp.stats.unwrap_or_default(),
        });
        println!("{event}");
        if a.stats {
            return Ok(0);
        }
        std::thread::sleep(a.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
