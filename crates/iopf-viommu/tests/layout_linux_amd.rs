//! The PPR log entry, the COMPLETE_PPR_REQUEST and COMPLETION_WAIT commands and the register
//! constants of `iopf_viommu::amd` are bit-identical to Linux's.
//!
//! The test copies Linux 6.12's own text out of Debian's `linux-source-6.12` tarball at test
//! time (`drivers/iommu/amd/amd_iommu_types.h`, `iommu.c` and `ppr.c`, extracted once and
//! cached under the cargo target dir): every `MMIO_*`, `FEATURE_*`, `CONTROL_*`, `CMD_*`,
//! `PPR_*`, `PPRLOG_*`, `EVTLOG_*` and `EVENT_*` macro of the header, the bodies of
//! `build_complete_ppr()` and `build_completion_wait()` and the `CMD_SET_TYPE` macro of
//! iommu.c, and `ppr_flag_to_fault_perm()` of ppr.c. A C program built from that text, with
//! gcc:
//!
//! 1. prints the register offsets, control and status bits, feature bits and size encodings;
//! 2. builds COMPLETE_PPR_REQUEST and COMPLETION_WAIT commands with Linux's own functions for
//!    many pseudo-random field sets, and prints their four words;
//! 3. decodes many PPR log entries with Linux's `PPR_*` macros (and the expressions of
//!    `iommu_call_iopf_notifier()`) and prints the fields.
//!
//! The Rust side must encode the same fields to the same words, decode Linux's words back to
//! the same fields, decode entries to what Linux reads, and have the same constants.

use iopf_abi::Perm;
use iopf_viommu::amd::command::{self, CompletionWait, PprCompletion};
use iopf_viommu::amd::ppr_entry::{self, PprEntry};
use iopf_viommu::amd::{event, regs};

mod linux_source;

const TYPES_H: &str = "drivers/iommu/amd/amd_iommu_types.h";
const IOMMU_C: &str = "drivers/iommu/amd/iommu.c";
const PPR_C: &str = "drivers/iommu/amd/ppr.c";

/// The header's `#define` lines for the families the page request path uses (continuation
/// lines included).
fn defines(types_h: &str) -> String {
    let families = [
        "MMIO_", "FEATURE_", "CONTROL_", "CMD_", "PPR_", "PPRLOG_", "EVTLOG_", "EVENT_",
    ];
    let mut out = String::new();
    let mut cont = false;
    for line in types_h.lines() {
        let take = cont
            || line
                .strip_prefix("#define ")
                .is_some_and(|rest| families.iter().any(|f| rest.starts_with(f)));
        if take {
            out.push_str(line);
            out.push('\n');
        }
        cont = take && line.ends_with('\\');
    }
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn amd_ppr_entry_commands_and_registers_match_linux() {
    let linux = linux_source::linux_files("linux-source-6.12-amd", &[TYPES_H, IOMMU_C, PPR_C]);
    let (types_h, iommu_c, ppr_c) = (&linux[0], &linux[1], &linux[2]);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Field sets for the commands: (devid, pasid, status, tag, gn), (address, data).
    let ppr: Vec<(u16, u32, u32, u32, u8)> = (0..200)
        .map(|_| {
            (
                rng.next() as u16,
                (rng.next() & 0xf_ffff) as u32,
                (rng.next() & 0xf) as u32,
                (rng.next() & 0x1ff) as u32,
                (rng.next() & 1) as u8,
            )
        })
        .collect();
    let waits: Vec<(u64, u64)> = (0..100)
        .map(|_| (rng.next() & 0x000f_ffff_ffff_fff8, rng.next()))
        .collect();
    let entries: Vec<u64> = (0..300).map(|_| rng.next()).collect();

    let mut prog = String::from(
        "#include <stdio.h>\n#include <stdint.h>\n#include <string.h>\n\
         typedef uint8_t u8; typedef uint16_t u16; typedef uint32_t u32; typedef uint64_t u64;\n\
         #define BIT(n) (1UL << (n))\n#define BIT_ULL(n) (1ULL << (n))\n\
         #define GENMASK_ULL(h, l) (((~0ULL) << (l)) & (~0ULL >> (63 - (h))))\n\
         #define SZ_8K 0x2000\n#define SZ_512K 0x80000\n\
         #define lower_32_bits(n) ((u32)((n) & 0xffffffff))\n\
         #define upper_32_bits(n) ((u32)(((n) >> 16) >> 16))\n\
         #define IOMMU_FAULT_PERM_READ (1 << 0)\n#define IOMMU_FAULT_PERM_WRITE (1 << 1)\n\
         #define IOMMU_FAULT_PERM_EXEC (1 << 2)\n#define IOMMU_FAULT_PERM_PRIV (1 << 3)\n\
         #define PAGE_MASK (~0xfffULL)\n\
         struct iommu_cmd { u32 data[4]; };\nstruct amd_iommu { u64 *cmd_sem; };\n\
         #define iommu_virt_to_phys(v) ((u64)(uintptr_t)(v))\n",
    );
    prog.push_str(&defines(types_h));
    let set_type = iommu_c
        .lines()
        .find(|l| l.starts_with("#define CMD_SET_TYPE"))
        .expect("CMD_SET_TYPE in iommu.c");
    prog.push_str(set_type);
    prog.push('\n');
    prog.push_str("static ");
    prog.push_str(linux_source::braced(iommu_c, "void build_completion_wait("));
    prog.push_str("\nstatic ");
    prog.push_str(linux_source::braced(iommu_c, "void build_complete_ppr("));
    prog.push_str("\nstatic ");
    prog.push_str(linux_source::braced(
        ppr_c,
        "inline u32 ppr_flag_to_fault_perm(",
    ));
    prog.push_str("\nint main(void) {\nstruct iommu_cmd cmd; struct amd_iommu iommu;\n");
    for name in [
        "MMIO_DEV_TABLE_OFFSET",
        "MMIO_CMD_BUF_OFFSET",
        "MMIO_EVT_BUF_OFFSET",
        "MMIO_CONTROL_OFFSET",
        "MMIO_EXCL_BASE_OFFSET",
        "MMIO_EXCL_LIMIT_OFFSET",
        "MMIO_EXT_FEATURES",
        "MMIO_PPR_LOG_OFFSET",
        "MMIO_CMD_HEAD_OFFSET",
        "MMIO_CMD_TAIL_OFFSET",
        "MMIO_EVT_HEAD_OFFSET",
        "MMIO_EVT_TAIL_OFFSET",
        "MMIO_STATUS_OFFSET",
        "MMIO_PPR_HEAD_OFFSET",
        "MMIO_PPR_TAIL_OFFSET",
        "CONTROL_IOMMU_EN",
        "CONTROL_EVT_LOG_EN",
        "CONTROL_EVT_INT_EN",
        "CONTROL_COMWAIT_EN",
        "CONTROL_CMDBUF_EN",
        "CONTROL_PPRLOG_EN",
        "CONTROL_PPRINT_EN",
        "CONTROL_PPR_EN",
        "MMIO_STATUS_EVT_OVERFLOW_MASK",
        "MMIO_STATUS_EVT_INT_MASK",
        "MMIO_STATUS_COM_WAIT_INT_MASK",
        "MMIO_STATUS_EVT_RUN_MASK",
        "MMIO_STATUS_PPR_OVERFLOW_MASK",
        "MMIO_STATUS_PPR_INT_MASK",
        "MMIO_STATUS_PPR_RUN_MASK",
        "FEATURE_PPR",
        "FEATURE_GT",
        "FEATURE_PASMAX",
        "FEATURE_GIOSUP",
        "FEATURE_EPHSUP",
        "PPRLOG_ENTRY_SIZE",
        "PPRLOG_SIZE_SHIFT",
        "PPRLOG_LEN_MASK_DEF",
        "PPRLOG_LEN_MASK_MAX",
        "PPRLOG_SIZE_DEF",
        "PPRLOG_SIZE_MAX",
        "MMIO_CMD_SIZE_SHIFT",
        "MMIO_CMD_SIZE_512",
        "CMD_BUFFER_SIZE",
        "EVTLOG_SIZE_SHIFT",
        "EVTLOG_LEN_MASK_DEF",
        "EVTLOG_ENTRY_SIZE",
        "PPR_FLAG_EXEC",
        "PPR_FLAG_READ",
        "PPR_FLAG_WRITE",
        "PPR_FLAG_US",
        "PPR_FLAG_RVSD",
        "PPR_FLAG_GN",
        "PPR_REQ_FAULT",
        "CMD_COMPL_WAIT",
        "CMD_COMPLETE_PPR",
        "CMD_INV_DEV_ENTRY",
        "CMD_INV_IOMMU_PAGES",
        "CMD_INV_IOTLB_PAGES",
        "CMD_INV_IRT",
        "CMD_INV_ALL",
        "CMD_COMPL_WAIT_STORE_MASK",
        "CMD_COMPL_WAIT_INT_MASK",
        "CMD_INV_IOMMU_PAGES_GN_MASK",
        "PPR_STATUS_MASK",
        "PPR_STATUS_SHIFT",
        "EVENT_TYPE_ILL_CMD",
        "EVENT_TYPE_CMD_HARD_ERR",
        "EVENT_TYPE_SHIFT",
        "EVENT_TYPE_MASK",
    ] {
        prog.push_str(&format!(
            "printf(\"const {name} %llu\\n\", (unsigned long long)({name}));\n"
        ));
    }
    for (i, &(devid, pasid, status, tag, gn)) in ppr.iter().enumerate() {
        prog.push_str(&format!(
            "build_complete_ppr(&cmd, {devid}, {pasid}u, {status}, {tag}, {gn});\n\
             printf(\"ppr {i} %u %u %u %u\\n\", cmd.data[0], cmd.data[1], cmd.data[2], cmd.data[3]);\n"
        ));
    }
    for (i, &(addr, data)) in waits.iter().enumerate() {
        prog.push_str(&format!(
            "iommu.cmd_sem = (u64 *)(uintptr_t){addr}ULL;\n\
             build_completion_wait(&cmd, &iommu, {data}ULL);\n\
             printf(\"wait {i} %u %u %u %u\\n\", cmd.data[0], cmd.data[1], cmd.data[2], cmd.data[3]);\n"
        ));
    }
    for (i, &raw) in entries.iter().enumerate() {
        prog.push_str(&format!(
            "{{ u64 r = {raw}ULL; printf(\"entry {i} %llu %llu %llu %llu %llu %u %llu %llu\\n\", \
             (unsigned long long)PPR_DEVID(r), (unsigned long long)PPR_PASID(r), \
             (unsigned long long)PPR_TAG(r), (unsigned long long)PPR_FLAGS(r), \
             (unsigned long long)PPR_REQ_TYPE(r), ppr_flag_to_fault_perm(PPR_FLAGS(r)), \
             (unsigned long long)(PPR_TAG(r) & 0x1FF), (unsigned long long)((PPR_TAG(r) & 0x200) != 0)); }}\n"
        ));
    }
    prog.push_str("return 0;\n}\n");
    let out = linux_source::compile_and_run(
        "layout_linux_amd",
        &prog,
        &["-std=gnu11", "-O0", "-Wall", "-Werror"],
    );

    let mut consts = std::collections::HashMap::new();
    let mut checked = (0, 0, 0);
    for line in out.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let nums = |from: usize| -> Vec<u64> {
            f[from..]
                .iter()
                .map(|s| s.parse().expect("a number"))
                .collect()
        };
        match f[0] {
            "const" => {
                consts.insert(f[1].to_string(), f[2].parse::<u64>().expect("a number"));
            }
            "ppr" => {
                let i: usize = f[1].parse().expect("index");
                let (devid, pasid, status, tag, gn) = ppr[i];
                let d = nums(2);
                let words = [d[0] as u32, d[1] as u32, d[2] as u32, d[3] as u32];
                // Linux builds it; we decode it to the same fields...
                let c = PprCompletion::decode(&words).expect("Linux's command is legal");
                let want_pasid = (gn != 0).then_some(pasid);
                assert_eq!(
                    (c.devid, c.pasid, c.tag, u32::from(c.raw_status)),
                    (devid, want_pasid, tag as u16, status),
                    "ppr {i}"
                );
                // ...and encode the same fields to the same words.
                let ours =
                    PprCompletion::with_raw_status(devid, want_pasid, tag as u16, status as u8);
                assert_eq!(ours.encode(), words, "ppr {i}");
                checked.0 += 1;
            }
            "wait" => {
                let i: usize = f[1].parse().expect("index");
                let (addr, data) = waits[i];
                let d = nums(2);
                let words = [d[0] as u32, d[1] as u32, d[2] as u32, d[3] as u32];
                let w = CompletionWait::decode(&words).expect("Linux's wait is legal");
                let want = CompletionWait {
                    store: true,
                    interrupt: false,
                    flush: false,
                    address: addr,
                    data,
                };
                assert_eq!(w, want, "wait {i}");
                assert_eq!(want.encode(), words, "wait {i}");
                checked.1 += 1;
            }
            "entry" => {
                let i: usize = f[1].parse().expect("index");
                let raw = entries[i];
                let d = nums(2);
                let e = PprEntry::fields(&[raw, 0x1234_5678_9abc_d000]);
                let flags = ((raw >> 48) & 0xfff) as u16;
                let gn = flags & ppr_entry::FLAG_GN != 0;
                assert_eq!(u64::from(e.devid), d[0], "entry {i} devid");
                assert_eq!(PprEntry::raw_pasid(raw) as u64, d[1], "entry {i} PASID");
                assert_eq!(
                    e.pasid,
                    gn.then_some(d[1] as u32),
                    "entry {i} PASID with GN"
                );
                assert_eq!(u64::from(e.tag()), d[2], "entry {i} tag");
                assert_eq!(u64::from(e.entry_type), d[4], "entry {i} type");
                let mut perm = 0u64;
                for (p, bit) in [
                    (Perm::READ, 1),
                    (Perm::WRITE, 2),
                    (Perm::EXEC, 4),
                    (Perm::PRIV, 8),
                ] {
                    if e.perm.contains(p) {
                        perm |= bit;
                    }
                }
                assert_eq!(perm, d[5], "entry {i}: ppr_flag_to_fault_perm()");
                assert_eq!(
                    (u64::from(e.prg_index), u64::from(e.last)),
                    (d[6], d[7]),
                    "entry {i}"
                );
                assert_eq!(e.reserved_flag, flags & ppr_entry::FLAG_RSVD != 0);
                // What we write, Linux reads back field for field.
                let mine = PprEntry::request(e.devid, e.pasid, e.prg_index, e.last, e.perm, 0x5000);
                assert_eq!(PprEntry::fields(&mine.encode()).tag(), e.tag());
                checked.2 += 1;
            }
            other => panic!("unexpected output line {other}"),
        }
    }
    assert_eq!(checked, (ppr.len(), waits.len(), entries.len()));

    let c = |n: &str| *consts.get(n).unwrap_or_else(|| panic!("{n} not printed"));
    let bit = |n: u32| 1u64 << n;
    for (name, ours) in [
        ("MMIO_DEV_TABLE_OFFSET", regs::DEV_TABLE),
        ("MMIO_CMD_BUF_OFFSET", regs::CMD_BUF),
        ("MMIO_EVT_BUF_OFFSET", regs::EVT_BUF),
        ("MMIO_CONTROL_OFFSET", regs::CONTROL),
        ("MMIO_EXCL_BASE_OFFSET", regs::EXCL_BASE),
        ("MMIO_EXCL_LIMIT_OFFSET", regs::EXCL_LIMIT),
        ("MMIO_EXT_FEATURES", regs::EXT_FEATURES),
        ("MMIO_PPR_LOG_OFFSET", regs::PPR_LOG),
        ("MMIO_CMD_HEAD_OFFSET", regs::CMD_HEAD),
        ("MMIO_CMD_TAIL_OFFSET", regs::CMD_TAIL),
        ("MMIO_EVT_HEAD_OFFSET", regs::EVT_HEAD),
        ("MMIO_EVT_TAIL_OFFSET", regs::EVT_TAIL),
        ("MMIO_STATUS_OFFSET", regs::STATUS),
        ("MMIO_PPR_HEAD_OFFSET", regs::PPR_HEAD),
        ("MMIO_PPR_TAIL_OFFSET", regs::PPR_TAIL),
        ("CONTROL_IOMMU_EN", u64::from(regs::CONTROL_IOMMU_EN)),
        ("CONTROL_EVT_LOG_EN", u64::from(regs::CONTROL_EVT_LOG_EN)),
        ("CONTROL_EVT_INT_EN", u64::from(regs::CONTROL_EVT_INT_EN)),
        ("CONTROL_COMWAIT_EN", u64::from(regs::CONTROL_COMWAIT_EN)),
        ("CONTROL_CMDBUF_EN", u64::from(regs::CONTROL_CMDBUF_EN)),
        ("CONTROL_PPRLOG_EN", u64::from(regs::CONTROL_PPRLOG_EN)),
        ("CONTROL_PPRINT_EN", u64::from(regs::CONTROL_PPRINT_EN)),
        ("CONTROL_PPR_EN", u64::from(regs::CONTROL_PPR_EN)),
        (
            "MMIO_STATUS_EVT_OVERFLOW_MASK",
            u64::from(regs::STATUS_EVT_OVERFLOW),
        ),
        ("MMIO_STATUS_EVT_INT_MASK", u64::from(regs::STATUS_EVT_INT)),
        (
            "MMIO_STATUS_COM_WAIT_INT_MASK",
            u64::from(regs::STATUS_COMWAIT_INT),
        ),
        ("MMIO_STATUS_EVT_RUN_MASK", u64::from(regs::STATUS_EVT_RUN)),
        (
            "MMIO_STATUS_PPR_OVERFLOW_MASK",
            u64::from(regs::STATUS_PPR_OVERFLOW),
        ),
        ("MMIO_STATUS_PPR_INT_MASK", u64::from(regs::STATUS_PPR_INT)),
        ("MMIO_STATUS_PPR_RUN_MASK", u64::from(regs::STATUS_PPR_RUN)),
        ("FEATURE_PPR", regs::FEATURE_PPR),
        ("FEATURE_GT", regs::FEATURE_GT),
        ("FEATURE_PASMAX", regs::FEATURE_PASMAX),
        ("FEATURE_GIOSUP", regs::FEATURE_GIOSUP),
        ("FEATURE_EPHSUP", regs::FEATURE_EPHSUP),
        ("PPRLOG_ENTRY_SIZE", ppr_entry::ENTRY_BYTES as u64),
        ("PPRLOG_SIZE_SHIFT", u64::from(regs::LEN_SHIFT)),
        ("PPRLOG_LEN_MASK_DEF", regs::LEN_DEFAULT << regs::LEN_SHIFT),
        ("PPRLOG_LEN_MASK_MAX", regs::LEN_MAX << regs::LEN_SHIFT),
        ("PPRLOG_SIZE_DEF", regs::ENTRY_BYTES << regs::LEN_DEFAULT),
        ("PPRLOG_SIZE_MAX", regs::ENTRY_BYTES << regs::LEN_MAX),
        ("MMIO_CMD_SIZE_SHIFT", u64::from(regs::LEN_SHIFT)),
        ("MMIO_CMD_SIZE_512", regs::LEN_DEFAULT << regs::LEN_SHIFT),
        ("CMD_BUFFER_SIZE", regs::ENTRY_BYTES << regs::LEN_DEFAULT),
        ("EVTLOG_SIZE_SHIFT", u64::from(regs::LEN_SHIFT)),
        ("EVTLOG_LEN_MASK_DEF", regs::LEN_DEFAULT << regs::LEN_SHIFT),
        ("EVTLOG_ENTRY_SIZE", regs::ENTRY_BYTES),
        ("PPR_FLAG_EXEC", u64::from(ppr_entry::FLAG_EXEC)),
        ("PPR_FLAG_READ", u64::from(ppr_entry::FLAG_READ)),
        ("PPR_FLAG_WRITE", u64::from(ppr_entry::FLAG_WRITE)),
        ("PPR_FLAG_US", u64::from(ppr_entry::FLAG_US)),
        ("PPR_FLAG_RVSD", u64::from(ppr_entry::FLAG_RSVD)),
        ("PPR_FLAG_GN", u64::from(ppr_entry::FLAG_GN)),
        ("PPR_REQ_FAULT", u64::from(ppr_entry::PPR_REQ_FAULT)),
        ("CMD_COMPL_WAIT", u64::from(command::COMPLETION_WAIT)),
        ("CMD_COMPLETE_PPR", u64::from(command::COMPLETE_PPR_REQUEST)),
        (
            "CMD_INV_DEV_ENTRY",
            u64::from(command::INVALIDATE_DEVTAB_ENTRY),
        ),
        (
            "CMD_INV_IOMMU_PAGES",
            u64::from(command::INVALIDATE_IOMMU_PAGES),
        ),
        (
            "CMD_INV_IOTLB_PAGES",
            u64::from(command::INVALIDATE_IOTLB_PAGES),
        ),
        (
            "CMD_INV_IRT",
            u64::from(command::INVALIDATE_INTERRUPT_TABLE),
        ),
        ("CMD_INV_ALL", u64::from(command::INVALIDATE_IOMMU_ALL)),
        ("CMD_COMPL_WAIT_STORE_MASK", u64::from(command::WAIT_STORE)),
        ("CMD_COMPL_WAIT_INT_MASK", u64::from(command::WAIT_INT)),
        ("CMD_INV_IOMMU_PAGES_GN_MASK", u64::from(command::PPR_GN)),
        ("PPR_STATUS_MASK", u64::from(command::PPR_STATUS_MASK)),
        ("PPR_STATUS_SHIFT", u64::from(command::PPR_STATUS_SHIFT)),
        (
            "EVENT_TYPE_ILL_CMD",
            u64::from(event::ILLEGAL_COMMAND_ERROR),
        ),
        (
            "EVENT_TYPE_CMD_HARD_ERR",
            u64::from(event::COMMAND_HARDWARE_ERROR),
        ),
    ] {
        assert_eq!(c(name), ours, "{name}");
    }
    // The event type where iommu_print_event() reads it: event[1] >> EVENT_TYPE_SHIFT.
    let qw = event::Event::illegal_command(0x1000).encode();
    assert_eq!(
        ((qw[0] >> 32) >> c("EVENT_TYPE_SHIFT")) & c("EVENT_TYPE_MASK"),
        c("EVENT_TYPE_ILL_CMD")
    );
    // The PASMAX this model advertises gives Linux 16-bit PASIDs without tripping its BUG_ON.
    let pasmax = (regs::EFR_PAGE_REQUESTS & c("FEATURE_PASMAX")) >> 32;
    assert_eq!((1u64 << (pasmax + 1)) - 1, 0xffff);
    assert_eq!(bit(regs::CONTROL_PPR_EN), regs::ctl(regs::CONTROL_PPR_EN));
}
