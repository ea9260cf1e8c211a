//! How the program writes values for people.

/// Flag names joined by `|` (`READ|WRITE`), or `-` when none is set.
pub fn flag_names<F: bitflags::Flags>(flags: &F) -> String {
    let all: Vec<&str> = flags.iter_names().map(|(n, _)| n).collect();
    if all.is_empty() {
        "-".into()
    } else {
        all.join("|")
    }
}

/// Counts by name as `3 backlog_full, 1 storm`, or `none` when there are none.
pub fn counts_or_none(counts: &std::collections::BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}
