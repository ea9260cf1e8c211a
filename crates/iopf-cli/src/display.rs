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
