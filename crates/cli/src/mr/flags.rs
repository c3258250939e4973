//! Parsing and checking `cairn mr`'s flags when the command line is read:
//! durations with units, sizes, and URLs (one to advertise must be one
//! others can connect to), and the URL a coordinator tells workers to use.

use std::time::Duration;

use anyhow::bail;

/// The longest duration a flag takes (about 11 days).
const MAX_DURATION_SECS: f64 = 1e6;

/// A duration: numbers with units, `500ms`, `10s`, `2m`, `1h`, `1m30s`; a
/// bare number is seconds (as these flags took before they had units).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let usage = || format!("{text:?} is not a duration; write e.g. 10s, 500ms, 2m or 1m30s");
    if trimmed.is_empty() {
        return Err(usage());
    }
    if let Ok(seconds) = trimmed.parse::<f64>() {
        return check_duration(text, seconds);
    }
    let mut rest = trimmed;
    let mut seconds = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let value: f64 = number.parse().map_err(|_| usage())?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = match unit.trim() {
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?}; use ms, s, m or h (e.g. 10s)"
                ));
            }
        };
        seconds += value * scale;
        rest = after;
    }
    check_duration(text, seconds)
}

fn check_duration(text: &str, seconds: f64) -> Result<Duration, String> {
    if !(seconds > 0.0 && seconds < MAX_DURATION_SECS) {
        return Err(format!(
            "{text:?}: use a positive duration under {} days",
            (MAX_DURATION_SECS / 86_400.0) as u32
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A server's URL, `http://HOST:PORT` (or `HOST:PORT`, which means it),
/// checked when the command line is read so that a typo fails at once.
pub(crate) fn parse_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let authority = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{scheme}:// is not supported; write http://HOST:PORT, e.g. http://host-a:7070"
            ));
        }
        None => text,
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(format!(
            "{text:?} has no port; write http://HOST:PORT, e.g. http://host-a:7070"
        ));
    };
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    if host.is_empty()
        || host.contains(['/', ' ', '@', '?', '#'])
        || (host.contains(':') && !bracketed)
    {
        return Err(format!(
            "{text:?} has no valid host; write http://HOST:PORT, e.g. http://host-a:7070 (an IPv6 \
             address in brackets: http://[::1]:7070)"
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(format!("http://{host}:{port}")),
        _ => Err(format!("{text:?}: {port:?} is not a port (1-65535)")),
    }
}

/// A URL to advertise: as [`parse_url`], and not an unspecified address
/// (`0.0.0.0`, `[::]`), which no other machine can connect to.
pub(crate) fn parse_advertise_url(text: &str) -> Result<String, String> {
    let url = parse_url(text)?;
    let host = url
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map_or("", |(host, _)| host);
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    if ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return Err(format!(
            "{text:?} means every interface, an address to listen on but not one to connect to; \
             advertise this machine's name or address, e.g. http://host-a:7070"
        ));
    }
    Ok(url)
}

/// The URL to give workers for a coordinator bound to `bound`: the
/// `--advertise` URL if given; else `http://BOUND`, or, bound to every
/// interface, `http://HOSTNAME:PORT`.
pub(super) fn coordinator_url(
    bound: std::net::SocketAddr,
    advertise: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(url) = advertise {
        return Ok(url.to_string());
    }
    if !bound.ip().is_unspecified() {
        return Ok(format!("http://{bound}"));
    }
    match hostname() {
        Some(host) => Ok(format!("http://{host}:{}", bound.port())),
        None => bail!(
            "listening on {bound} (every interface), and this machine's hostname is unknown; pass \
             --advertise http://HOST:{} with the name or address workers reach it by",
            bound.port()
        ),
    }
}

/// This machine's hostname (Linux: the kernel's; else `$HOSTNAME`), if it
/// makes a valid URL.
fn hostname() -> Option<String> {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| parse_advertise_url(&format!("{name}:1")).is_ok())
}

/// `64MiB`, `512KiB`, `1GiB`, `100MB` or plain bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 64MiB)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?}; use KiB, MiB or GiB")),
    };
    match number.checked_mul(scale) {
        Some(0) => Err("the size must be positive".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("{text} is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_numbers_are_seconds() {
        let ok = |text| parse_duration(text).unwrap();
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("2.5"), Duration::from_millis(2500));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        for (bad, why) in [
            ("", "not a duration"),
            ("ten", "not a duration"),
            ("10x", "unknown unit \"x\""),
            ("0", "positive"),
            ("0s", "positive"),
            ("-1", "positive"),
            ("NaN", "positive"),
            ("1000000", "under 11 days"),
        ] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }

    #[test]
    fn urls_are_checked_and_a_bare_address_means_http() {
        assert_eq!(parse_url("host-a:7070").unwrap(), "http://host-a:7070");
        assert_eq!(
            parse_url("http://10.0.0.1:7070/").unwrap(),
            "http://10.0.0.1:7070"
        );
        assert_eq!(parse_url("http://[::1]:7070").unwrap(), "http://[::1]:7070");
        for (bad, why) in [
            ("ftp://host:1", "ftp:// is not supported"),
            ("nonsense", "has no port"),
            ("http://host:99999", "not a port"),
            ("http://host:0", "not a port"),
            ("http://:7070", "no valid host"),
            ("http://a/b:7070", "no valid host"),
            ("::1:7070", "no valid host"),
        ] {
            let error = parse_url(bad).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }

    #[test]
    fn an_unspecified_address_is_not_advertised() {
        for bad in ["http://0.0.0.0:7070", "0.0.0.0:7070", "http://[::]:7070"] {
            let error = parse_advertise_url(bad).unwrap_err();
            assert!(error.contains("every interface"), "{bad}: {error}");
        }
        assert_eq!(
            parse_advertise_url("http://host-a:7070").unwrap(),
            "http://host-a:7070"
        );
    }

    #[test]
    fn a_coordinator_on_every_interface_advertises_its_hostname() {
        let any: std::net::SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let url = coordinator_url(any, None).unwrap();
        assert!(!url.contains("0.0.0.0"), "{url}");
        assert!(url.ends_with(":7070"), "{url}");
        parse_advertise_url(&url).unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:7070".parse().unwrap();
        assert_eq!(
            coordinator_url(local, None).unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            coordinator_url(any, Some("http://host-a:7070")).unwrap(),
            "http://host-a:7070"
        );
    }
}
