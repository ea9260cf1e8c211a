//! What the `layout_linux_*` tests share: Linux 6.12's own files, read out of Debian's
//! `linux-source-6.12` tarball and cached under the cargo target dir; the text of a braced C
//! definition; and a C program compiled and run with gcc.
//!
//! Every helper panics, with a message saying what is missing, rather than returning an error:
//! a layout test cannot go on without Linux's text or a C compiler.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Linux 6.12's source tree; Debian's package `linux-source-6.12` installs it
/// (`bash scripts/install-deps.sh` does).
pub const TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";

/// The texts of `members` (paths inside the tree, such as `"drivers/iommu/intel/prq.c"`), in
/// the order given.
///
/// They are extracted once per tarball version into `CARGO_TARGET_TMPDIR/<cache_name>`, each
/// at its path inside the tree, beside a stamp naming the tarball's size and modification time
/// and the members; later calls read them from there while the stamp still matches and every
/// file is present, and extract them again otherwise. Each test uses its own `cache_name`, so
/// tests running at the same time never share a cache.
///
/// Panics if [`TARBALL`] is missing (naming `bash scripts/install-deps.sh`, and, when the `CI`
/// environment variable is set, saying that CI must provide the package), if a member is not
/// in it, or if the cache cannot be written or read.
pub fn linux_files(cache_name: &str, members: &[&str]) -> Vec<String> {
    let meta = match std::fs::metadata(TARBALL) {
        Ok(m) => m,
        Err(e) if std::env::var_os("CI").is_some() => panic!(
            "{TARBALL}: {e}. CI must provide the Debian package linux-source-6.12 (this \
             layout test reads {} from it); scripts/install-deps.sh installs it",
            list(members)
        ),
        Err(e) => panic!(
            "{TARBALL}: {e}. This layout test reads {} from Debian's linux-source-6.12: \
             `bash scripts/install-deps.sh` installs it",
            list(members)
        ),
    };
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let stamp_text = format!("{TARBALL} {} {mtime}\n{}\n", meta.len(), members.join("\n"));

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(cache_name);
    let files: Vec<PathBuf> = members.iter().map(|m| dir.join(m)).collect();
    let stamp = dir.join("stamp");
    let cached = std::fs::read_to_string(&stamp).is_ok_and(|s| s == stamp_text)
        && files.iter().all(|f| f.is_file());
    if !cached {
        extract(&dir, members);
        std::fs::write(&stamp, stamp_text).expect("write the cache stamp");
    }
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_else(|e| panic!("read the cached {}: {e}", f.display()))
        })
        .collect()
}

/// `tar -x` of just `*/member` for each member into a scratch dir under `dir`, then each file
/// moved to `dir/<member>`.
fn extract(dir: &Path, members: &[&str]) {
    let tmp = dir.join(format!("extract-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("create the extraction dir");
    let status = Command::new("tar")
        .arg("-xJf")
        .arg(TARBALL)
        .arg("-C")
        .arg(&tmp)
        .arg("--wildcards")
        .args(members.iter().map(|m| format!("*/{m}")))
        .status()
        .expect("run tar");
    assert!(
        status.success(),
        "tar could not extract {members:?} from {TARBALL}"
    );
    let top = std::fs::read_dir(&tmp)
        .expect("read the extraction dir")
        .map(|e| e.expect("a directory entry").path())
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("{TARBALL} holds no top directory"));
    for member in members {
        let to = dir.join(member);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("create the cache dir");
        }
        std::fs::rename(top.join(member), &to)
            .unwrap_or_else(|e| panic!("{member} not in {TARBALL}: {e}"));
    }
    std::fs::remove_dir_all(&tmp).expect("remove the extraction dir");
}

/// `a`, `a and b`, `a, b and c`.
fn list(members: &[&str]) -> String {
    match members {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The text of `src` from the first occurrence of `start` to the brace that closes the first
/// `{` after it, both included (a C function, struct or enum without its `;`).
///
/// Braces are counted as they come: ones inside comments or string literals count too. Panics
/// if `start` is not in `src` or its braces are not closed.
pub fn braced<'a>(src: &'a str, start: &str) -> &'a str {
    let begin = src
        .find(start)
        .unwrap_or_else(|| panic!("`{start}` not found"));
    let mut depth = 0usize;
    for (i, c) in src[begin..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &src[begin..=begin + i];
                }
            }
            _ => {}
        }
    }
    panic!("`{start}` has no matching closing brace");
}

/// Where [`compile_and_run`] keeps the C program `name`: `CARGO_TARGET_TMPDIR/<name>`.
pub fn c_program_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Writes `src` to `<name>.c` in [`c_program_dir`]`(name)`, compiles it with `$CC` (gcc if
/// unset) given `flags` (such as `["-std=gnu11", "-Wall", "-Werror"]`; `-o` and the file names
/// are added), runs the program without arguments and returns what it printed to stdout.
///
/// Panics if the compiler cannot be run, the program does not compile (with the compiler's
/// messages), the program exits unsuccessfully or prints anything but UTF-8. The source and
/// binary stay in the directory, to be looked at after a failure.
pub fn compile_and_run(name: &str, src: &str, flags: &[&str]) -> String {
    let dir = c_program_dir(name);
    std::fs::create_dir_all(&dir).expect("create the C program's dir");
    let c = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&c, src).expect("write the C program");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let out = Command::new(&cc)
        .args(flags)
        .arg("-o")
        .arg(&bin)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc} (scripts/install-deps.sh installs gcc): {e}"));
    assert!(
        out.status.success(),
        "the C program {} did not compile:\n{}",
        c.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&bin).output().expect("run the C program");
    assert!(
        run.status.success(),
        "the C program {} failed ({}):\n{}",
        bin.display(),
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8(run.stdout).expect("the C program prints text")
}
