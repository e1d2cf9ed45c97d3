//! OTLP units from Prometheus names: the unit word a Prometheus name ends
//! with, in UCUM, as the OpenTelemetry Prometheus-compatibility rules map
//! them (`_seconds` -> `s`, `_bytes` -> `By`; a `_ratio` gauge is `1`).

use astrolabe_collectors::Kind;

/// The spec's table of Prometheus unit words and their UCUM abbreviations,
/// plus `ratio` (the suffix Prometheus gives unit `1`).
const UNITS: &[(&str, &str)] = &[
    ("days", "d"),
    ("hours", "h"),
    ("minutes", "min"),
    ("seconds", "s"),
    ("milliseconds", "ms"),
    ("microseconds", "us"),
    ("nanoseconds", "ns"),
    ("bytes", "By"),
    ("kibibytes", "KiBy"),
    ("mebibytes", "MiBy"),
    ("gibibytes", "GiBy"),
    ("tebibytes", "TiBy"),
    ("kilobytes", "kBy"),
    ("megabytes", "MBy"),
    ("gigabytes", "GBy"),
    ("terabytes", "TBy"),
    ("meters", "m"),
    ("volts", "V"),
    ("amperes", "A"),
    ("joules", "J"),
    ("watts", "W"),
    ("grams", "g"),
    ("celsius", "Cel"),
    ("hertz", "Hz"),
    ("percent", "%"),
    ("ratio", "1"),
];

/// Denominators of `<unit>_per_<time>` names (`_bytes_per_second` -> `By/s`).
const PER: &[(&str, &str)] = &[
    ("second", "s"),
    ("minute", "min"),
    ("hour", "h"),
    ("day", "d"),
];

fn lookup(table: &[(&str, &'static str)], word: &str) -> Option<&'static str> {
    table.iter().find(|(w, _)| *w == word).map(|(_, u)| *u)
}

/// The UCUM unit of a Prometheus family name, or "" when its name names
/// none. A counter's unit comes before its `_total`.
pub fn unit_of(prometheus_name: &str, kind: Kind) -> String {
    let name = match kind {
        Kind::Counter => prometheus_name
            .strip_suffix("_total")
            .unwrap_or(prometheus_name),
        _ => prometheus_name,
    };
    let words: Vec<&str> = name.split('_').collect();
    match words.as_slice() {
        [.., _, unit, "per", per] => match (lookup(UNITS, unit), lookup(PER, per)) {
            (Some(u), Some(p)) => format!("{u}/{p}"),
            _ => String::new(),
        },
        [_, .., unit] => lookup(UNITS, unit).unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_from_the_name_suffix() {
        for (name, kind, unit) in [
            ("node_cpu_seconds_total", Kind::Counter, "s"),
            ("astrolabe_zone_age_seconds", Kind::Gauge, "s"),
            ("node_memory_MemTotal_bytes", Kind::Gauge, "By"),
            ("node_network_receive_bytes_total", Kind::Counter, "By"),
            ("cache_hit_ratio", Kind::Gauge, "1"),
            ("disk_used_percent", Kind::Untyped, "%"),
            ("astrolabe_query_duration_seconds", Kind::Histogram, "s"),
            ("rpc_latency_milliseconds", Kind::Summary, "ms"),
            ("net_bytes_per_second", Kind::Gauge, "By/s"),
            ("astrolabe_gossip_rounds_total", Kind::Counter, ""),
            ("node_load1", Kind::Gauge, ""),
            // Only a counter's `_total` is skipped; a lone word names no unit.
            ("seconds", Kind::Gauge, ""),
            ("x_seconds_total", Kind::Gauge, ""),
            ("things_per_second", Kind::Gauge, ""),
        ] {
            assert_eq!(unit_of(name, kind), unit, "{name}");
        }
    }
}
