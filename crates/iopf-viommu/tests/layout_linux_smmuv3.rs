//! The SMMUv3 entries, commands, queue pointers and registers of `iopf_viommu::smmuv3` are
//! bit-identical to Linux's.
//!
//! The test copies Linux 6.12's own definitions out of Debian's `linux-source-6.12` tarball at
//! test time (`drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h` and `arm-smmu-v3.c`, extracted once
//! and cached under the cargo target dir): every `#define` of the register offsets and bits,
//! the queue macros (`Q_IDX`, `Q_WRP`, `Q_OVF`), `PRIQ_*`, `EVTQ_*`, `CMDQ_*`, `enum pri_resp`,
//! `struct arm_smmu_cmdq_ent` and the function `arm_smmu_cmdq_build_cmd()` itself. A C program
//! built from that text with gcc (with small shims for `GENMASK_ULL`, `FIELD_PREP`,
//! `FIELD_GET`):
//!
//! 1. builds PRI queue entries with the `PRIQ_*` macros and decodes them as
//!    `arm_smmu_handle_ppr()` does;
//! 2. builds `CMD_PRI_RESP`, `CMD_RESUME` and `CMD_SYNC` with `arm_smmu_cmdq_build_cmd()`
//!    (and `CMD_STALL_TERM`, which Linux 6.12 does not issue, with `CMDQ_0_OP` and the
//!    `CMDQ_RESUME_0_SID` field it shares);
//! 3. decodes stall event records as `arm_smmu_handle_evt()` does (`EVTQ_*`);
//! 4. evaluates `Q_IDX`, `Q_WRP`, `Q_OVF` and prints the register offsets and bits.
//!
//! The Rust side must encode the same fields to the same words and decode Linux's words back.
//! `STE.PPAR` (STE bit 82) is the spec's: the test checks that Linux 6.12 does not define it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use iopf_abi::Perm;
use iopf_viommu::smmuv3::queue::{q_idx, q_ovf, q_wrp};
use iopf_viommu::smmuv3::regs::*;
use iopf_viommu::smmuv3::stream_table::STE_1_PPAR;
use iopf_viommu::smmuv3::{Command, PriEntry, StallEvent, SyncCs};

mod linux_source;

const HEADER: &str = "drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h";
const SOURCE: &str = "drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c";

/// Every `#define` of the header (continuations joined), except the page-size dependent
/// queue limits (inside an `#ifdef`) and the `CMDQ_OP_*` ones `struct arm_smmu_cmdq_ent`
/// carries itself.
fn defines(h: &str) -> String {
    let mut out = String::new();
    let mut lines = h.lines();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if !t.starts_with("#define") {
            continue;
        }
        let mut def = l.to_string();
        while def.ends_with('\\') {
            def.pop();
            def.push_str(lines.next().unwrap_or(""));
        }
        let name = def.split_whitespace().nth(1).unwrap_or("");
        if name.contains("MAX_SZ")
            || name.starts_with("CMDQ_OP_")
            || name == "ATC_INV_SIZE_ALL"
            || name == "_ARM_SMMU_V3_H"
        {
            continue;
        }
        out.push_str(&def);
        out.push('\n');
    }
    out
}

const SHIMS: &str = r#"
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
typedef uint64_t u64; typedef uint32_t u32; typedef uint16_t u16; typedef uint8_t u8;
typedef u64 __le64; typedef u64 dma_addr_t; typedef u64 phys_addr_t; typedef u64 size_t_;
#define GENMASK_ULL(h, l) (((~0ULL) << (l)) & (~0ULL >> (63 - (h))))
#define GENMASK(h, l) GENMASK_ULL(h, l)
#define __bf_shf(m) (__builtin_ffsll(m) - 1)
#define FIELD_PREP(m, v) ((((u64)(v)) << __bf_shf(m)) & (m))
#define FIELD_GET(m, v) ((((u64)(v)) & (m)) >> __bf_shf(m))
struct llq { u32 max_n_shift; };
#define fallthrough __attribute__((__fallthrough__))
#define SMP_CACHE_BYTES 64
#define ____cacheline_aligned_in_smp
typedef struct { int counter; } atomic_t;
"#;

type Words = Vec<u64>;

/// The C program's output, one `key<TAB>hex words` line per case.
fn parse(out: &str) -> BTreeMap<String, Words> {
    out.lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').expect("key<TAB>words");
            let w = v
                .split_whitespace()
                .map(|x| u64::from_str_radix(x, 16).expect("hex"))
                .collect();
            (k.to_string(), w)
        })
        .collect()
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

fn perm(bits: u64) -> Perm {
    let mut p = Perm::empty();
    p.set(Perm::READ, bits & 1 != 0);
    p.set(Perm::WRITE, bits & 2 != 0);
    p.set(Perm::EXEC, bits & 4 != 0);
    p.set(Perm::PRIV, bits & 8 != 0);
    p
}

#[test]
fn smmuv3_entries_commands_and_registers_match_linux() {
    let linux = linux_source::linux_files("linux-source-6.12-smmuv3", &[HEADER, SOURCE]);
    let (h, c) = (&linux[0], &linux[1]);
    let mut prog = String::from(SHIMS);
    prog.push_str(&defines(h));
    prog.push_str(linux_source::braced(h, "enum pri_resp"));
    prog.push_str(";\n");
    prog.push_str(linux_source::braced(h, "struct arm_smmu_cmdq_ent {"));
    prog.push_str(";\n");
    prog.push_str(linux_source::braced(
        c,
        "static int arm_smmu_cmdq_build_cmd(",
    ));
    prog.push_str("\nstatic void cmd(const char *k, struct arm_smmu_cmdq_ent *e) {\n");
    prog.push_str(
        "  u64 w[2]; if (arm_smmu_cmdq_build_cmd(w, e)) { printf(\"%s\\terr\\n\", k); return; }\n",
    );
    prog.push_str("  printf(\"%s\\t%llx %llx\\n\", k, (unsigned long long)w[0], (unsigned long long)w[1]);\n}\n");
    prog.push_str("#define P(k, ...) printf(\"%s\\t\", k), pw(__VA_ARGS__, ~0ULL)\n");
    prog.push_str("static void pw(u64 a, ...) { __builtin_va_list ap; __builtin_va_start(ap, a); u64 v = a; int first = 1; while (v != ~0ULL) { printf(first ? \"%llx\" : \" %llx\", (unsigned long long)v); first = 0; v = __builtin_va_arg(ap, u64); } __builtin_va_end(ap); printf(\"\\n\"); }\n");
    prog.push_str("int main(void) {\n");

    let mut expect: BTreeMap<String, Words> = BTreeMap::new();
    let mut rng = Rng(0x51a3_9e0c_44d1_7b25);
    let mut body = String::new();

    // 1. PRI queue entries.
    for i in 0..64 {
        let r = rng.next();
        let e = PriEntry {
            sid: if i == 0 { u32::MAX } else { rng.next() as u32 },
            ssid: (r & 1 != 0).then_some((rng.next() & 0xf_ffff) as u32),
            perm: perm(r >> 1),
            last: r & 0x20 != 0,
            prg_index: (rng.next() & 0x1ff) as u16,
            addr: rng.next() & !0xfff,
        };
        let p = e.perm;
        let _ = writeln!(
            body,
            "  {{ u64 d0 = FIELD_PREP(PRIQ_0_SID, 0x{sid:x}ULL) | FIELD_PREP(PRIQ_0_SSID, 0x{ssid:x}ULL) | ({ssv} ? PRIQ_0_SSID_V : 0) | ({pr} ? PRIQ_0_PERM_PRIV : 0) | ({x} ? PRIQ_0_PERM_EXEC : 0) | ({rd} ? PRIQ_0_PERM_READ : 0) | ({wr} ? PRIQ_0_PERM_WRITE : 0) | ({last} ? PRIQ_0_PRG_LAST : 0);\n    u64 d1 = FIELD_PREP(PRIQ_1_PRG_IDX, 0x{prg:x}ULL) | (0x{addr:x}ULL & PRIQ_1_ADDR_MASK);\n    P(\"pri{i}\", d0, d1);\n    P(\"pri{i}.get\", FIELD_GET(PRIQ_0_SID, d0), FIELD_GET(PRIQ_0_SSID_V, d0), FIELD_GET(PRIQ_0_SSID, d0), FIELD_GET(PRIQ_0_PRG_LAST, d0), FIELD_GET(PRIQ_1_PRG_IDX, d1), d1 & PRIQ_1_ADDR_MASK); }}",
            sid = e.sid,
            ssid = e.ssid.unwrap_or(0),
            ssv = u8::from(e.ssid.is_some()),
            pr = u8::from(p.contains(Perm::PRIV)),
            x = u8::from(p.contains(Perm::EXEC)),
            rd = u8::from(p.contains(Perm::READ)),
            wr = u8::from(p.contains(Perm::WRITE)),
            last = u8::from(e.last),
            prg = e.prg_index,
            addr = e.addr,
        );
        let w = e.encode();
        expect.insert(format!("pri{i}"), w.to_vec());
        expect.insert(
            format!("pri{i}.get"),
            vec![
                u64::from(e.sid),
                u64::from(e.ssid.is_some()),
                u64::from(e.ssid.unwrap_or(0)),
                u64::from(e.last),
                u64::from(e.prg_index),
                e.addr,
            ],
        );
        assert_eq!(PriEntry::decode(&w), Ok(e));
    }

    // 2. Commands, built by Linux's own arm_smmu_cmdq_build_cmd().
    for i in 0..64 {
        let sid = rng.next() as u32;
        let ssid = (rng.next() & 0xf_ffff) as u32;
        let ssv = rng.next() & 1 != 0;
        let grpid = (rng.next() & 0x1ff) as u16;
        let resp = (rng.next() % 3) as u8;
        let _ = writeln!(
            body,
            "  {{ struct arm_smmu_cmdq_ent e = {{ .opcode = CMDQ_OP_PRI_RESP, .substream_valid = {ssv}, .pri = {{ .sid = 0x{sid:x}, .ssid = 0x{s:x}, .grpid = 0x{grpid:x}, .resp = {resp} }} }}; cmd(\"pri_resp{i}\", &e); }}",
            ssv = u8::from(ssv),
            s = if ssv { ssid } else { 0 },
        );
        let pr = Command::PriResp {
            sid,
            ssid: ssv.then_some(ssid),
            grpid,
            resp,
        };
        expect.insert(format!("pri_resp{i}"), pr.encode().to_vec());
        assert_eq!(Command::decode(&pr.encode()), Ok(pr));

        let stag = rng.next() as u16;
        let rresp = (rng.next() % 3) as u8;
        let _ = writeln!(
            body,
            "  {{ struct arm_smmu_cmdq_ent e = {{ .opcode = CMDQ_OP_RESUME, .resume = {{ .sid = 0x{sid:x}, .stag = 0x{stag:x}, .resp = {rresp} }} }}; cmd(\"resume{i}\", &e); }}"
        );
        let rs = Command::Resume {
            sid,
            stag,
            resp: rresp,
        };
        expect.insert(format!("resume{i}"), rs.encode().to_vec());
        assert_eq!(Command::decode(&rs.encode()), Ok(rs));

        let _ = writeln!(
            body,
            "  P(\"stall_term{i}\", FIELD_PREP(CMDQ_0_OP, 0x45) | FIELD_PREP(CMDQ_RESUME_0_SID, 0x{sid:x}ULL), 0ULL);"
        );
        expect.insert(
            format!("stall_term{i}"),
            Command::StallTerm { sid }.encode().to_vec(),
        );

        let msiaddr = rng.next() & 0x000f_ffff_ffff_fffc;
        let _ = writeln!(
            body,
            "  {{ struct arm_smmu_cmdq_ent e = {{ .opcode = CMDQ_OP_CMD_SYNC, .sync = {{ .msiaddr = 0x{msiaddr:x}ULL }} }}; cmd(\"sync{i}\", &e); }}"
        );
        let sy = Command::Sync {
            cs: if msiaddr != 0 {
                SyncCs::Irq
            } else {
                SyncCs::Sev
            },
            msh: 3,
            msi_attr: 0xf,
            msi_data: 0,
            msi_addr: msiaddr,
        };
        expect.insert(format!("sync{i}"), sy.encode().to_vec());
        assert_eq!(Command::decode(&sy.encode()), Ok(sy));
    }
    body.push_str("  { struct arm_smmu_cmdq_ent e = { .opcode = CMDQ_OP_CMD_SYNC }; cmd(\"sync_sev\", &e); }\n");
    expect.insert(
        "sync_sev".into(),
        Command::Sync {
            cs: SyncCs::Sev,
            msh: 3,
            msi_attr: 0xf,
            msi_data: 0,
            msi_addr: 0,
        }
        .encode()
        .to_vec(),
    );

    // 3. Stall records, decoded as arm_smmu_handle_evt() does.
    for i in 0..64 {
        let r = rng.next();
        let ev = StallEvent {
            id: 0x10,
            sid: rng.next() as u32,
            ssid: (r & 1 != 0).then_some((rng.next() & 0xf_ffff) as u32),
            stag: rng.next() as u16,
            perm: perm(r >> 1),
            addr: rng.next(),
        };
        let w = ev.encode();
        let _ = writeln!(
            body,
            "  {{ u64 e0 = 0x{:x}ULL, e1 = 0x{:x}ULL, e2 = 0x{:x}ULL; P(\"evt{i}\", FIELD_GET(EVTQ_0_ID, e0), FIELD_GET(EVTQ_0_SSV, e0), FIELD_GET(EVTQ_0_SSID, e0), FIELD_GET(EVTQ_0_SID, e0), FIELD_GET(EVTQ_1_STAG, e1), FIELD_GET(EVTQ_1_STALL, e1), FIELD_GET(EVTQ_1_RnW, e1), FIELD_GET(EVTQ_1_InD, e1), FIELD_GET(EVTQ_1_PnU, e1), FIELD_GET(EVTQ_2_ADDR, e2)); }}",
            w[0], w[1], w[2]
        );
        let d = StallEvent::decode(&w).expect("decodes");
        expect.insert(
            format!("evt{i}"),
            vec![
                0x10,
                u64::from(d.ssid.is_some()),
                u64::from(ev.ssid.unwrap_or(0)),
                u64::from(ev.sid),
                u64::from(ev.stag),
                1,
                u64::from(!ev.perm.contains(Perm::WRITE)),
                u64::from(ev.perm.contains(Perm::EXEC)),
                u64::from(ev.perm.contains(Perm::PRIV)),
                ev.addr,
            ],
        );
        assert_eq!(
            (d.sid, d.ssid, d.stag, d.addr),
            (ev.sid, ev.ssid, ev.stag, ev.addr)
        );
    }

    // 4. Queue macros and registers.
    for (i, (shift, p)) in [
        (0u32, 0u32),
        (4, 0x1f),
        (4, 0x8000_0017),
        (7, 0xff),
        (19, 0xf_ffff),
        (19, 0x8008_0001),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = writeln!(
            body,
            "  {{ struct llq q = {{ {shift} }}; struct llq *l = &q; P(\"q{i}\", (u64)Q_IDX(l, 0x{p:x}U), (u64)Q_WRP(l, 0x{p:x}U), (u64)Q_OVF(0x{p:x}U)); }}"
        );
        expect.insert(
            format!("q{i}"),
            vec![
                u64::from(q_idx(p, shift)),
                u64::from(q_wrp(p, shift)),
                u64::from(q_ovf(p)),
            ],
        );
    }
    let regs: &[(&str, u64)] = &[
        ("ARM_SMMU_IDR0", IDR0),
        ("ARM_SMMU_IDR1", IDR1),
        ("ARM_SMMU_IDR5", IDR5),
        ("ARM_SMMU_CR0", CR0),
        ("ARM_SMMU_CR0ACK", CR0ACK),
        ("ARM_SMMU_CR1", CR1),
        ("ARM_SMMU_CR2", CR2),
        ("ARM_SMMU_GBPA", GBPA),
        ("ARM_SMMU_IRQ_CTRL", IRQ_CTRL),
        ("ARM_SMMU_IRQ_CTRLACK", IRQ_CTRLACK),
        ("ARM_SMMU_GERROR", GERROR),
        ("ARM_SMMU_GERRORN", GERRORN),
        ("ARM_SMMU_GERROR_IRQ_CFG0", GERROR_IRQ_CFG0),
        ("ARM_SMMU_GERROR_IRQ_CFG1", GERROR_IRQ_CFG1),
        ("ARM_SMMU_GERROR_IRQ_CFG2", GERROR_IRQ_CFG2),
        ("ARM_SMMU_STRTAB_BASE", STRTAB_BASE),
        ("ARM_SMMU_STRTAB_BASE_CFG", STRTAB_BASE_CFG),
        ("ARM_SMMU_CMDQ_BASE", CMDQ_BASE),
        ("ARM_SMMU_CMDQ_PROD", CMDQ_PROD),
        ("ARM_SMMU_CMDQ_CONS", CMDQ_CONS),
        ("ARM_SMMU_EVTQ_BASE", EVTQ_BASE),
        ("SZ_64K_PAGE1 + ARM_SMMU_EVTQ_PROD", EVTQ_PROD),
        ("SZ_64K_PAGE1 + ARM_SMMU_EVTQ_CONS", EVTQ_CONS),
        ("ARM_SMMU_EVTQ_IRQ_CFG0", EVTQ_IRQ_CFG0),
        ("ARM_SMMU_EVTQ_IRQ_CFG1", EVTQ_IRQ_CFG1),
        ("ARM_SMMU_EVTQ_IRQ_CFG2", EVTQ_IRQ_CFG2),
        ("ARM_SMMU_PRIQ_BASE", PRIQ_BASE),
        ("SZ_64K_PAGE1 + ARM_SMMU_PRIQ_PROD", PRIQ_PROD),
        ("SZ_64K_PAGE1 + ARM_SMMU_PRIQ_CONS", PRIQ_CONS),
        ("ARM_SMMU_PRIQ_IRQ_CFG0", PRIQ_IRQ_CFG0),
        ("ARM_SMMU_PRIQ_IRQ_CFG1", PRIQ_IRQ_CFG1),
        ("ARM_SMMU_PRIQ_IRQ_CFG2", PRIQ_IRQ_CFG2),
        ("CR0_ATSCHK", u64::from(CR0_ATSCHK)),
        ("CR0_CMDQEN", u64::from(CR0_CMDQEN)),
        ("CR0_EVTQEN", u64::from(CR0_EVTQEN)),
        ("CR0_PRIQEN", u64::from(CR0_PRIQEN)),
        ("CR0_SMMUEN", u64::from(CR0_SMMUEN)),
        ("GBPA_UPDATE", u64::from(GBPA_UPDATE)),
        ("IRQ_CTRL_EVTQ_IRQEN", u64::from(IRQ_CTRL_EVTQ_IRQEN)),
        ("IRQ_CTRL_PRIQ_IRQEN", u64::from(IRQ_CTRL_PRIQ_IRQEN)),
        ("IRQ_CTRL_GERROR_IRQEN", u64::from(IRQ_CTRL_GERROR_IRQEN)),
        (
            "GERROR_MSI_GERROR_ABT_ERR",
            u64::from(GERROR_MSI_GERROR_ABT_ERR),
        ),
        (
            "GERROR_MSI_PRIQ_ABT_ERR",
            u64::from(GERROR_MSI_PRIQ_ABT_ERR),
        ),
        (
            "GERROR_MSI_EVTQ_ABT_ERR",
            u64::from(GERROR_MSI_EVTQ_ABT_ERR),
        ),
        (
            "GERROR_MSI_CMDQ_ABT_ERR",
            u64::from(GERROR_MSI_CMDQ_ABT_ERR),
        ),
        ("GERROR_PRIQ_ABT_ERR", u64::from(GERROR_PRIQ_ABT_ERR)),
        ("GERROR_EVTQ_ABT_ERR", u64::from(GERROR_EVTQ_ABT_ERR)),
        ("GERROR_CMDQ_ERR", u64::from(GERROR_CMDQ_ERR)),
        ("GERROR_ERR_MASK", u64::from(GERROR_ERR_MASK)),
        ("IDR0_PRI", u64::from(IDR0_PRI)),
        ("IDR0_MSI", u64::from(IDR0_MSI)),
        ("IDR0_ATS", u64::from(IDR0_ATS)),
        ("IDR0_COHACC", u64::from(IDR0_COHACC)),
        ("IDR0_S1P", u64::from(IDR0_S1P)),
        (
            "FIELD_PREP(IDR0_TTF, IDR0_TTF_AARCH64)",
            u64::from(IDR0_TTF_AARCH64),
        ),
        (
            "FIELD_GET(IDR0_ST_LVL, 0xffffffffULL) << 27",
            3 << IDR0_ST_LVL_SHIFT,
        ),
        (
            "FIELD_GET(IDR0_STALL_MODEL, 0xffffffffULL) << 24",
            3 << IDR0_STALL_MODEL_SHIFT,
        ),
        (
            "FIELD_GET(IDR1_CMDQS, 0xffffffffULL) << 21",
            0x1f << IDR1_CMDQS_SHIFT,
        ),
        (
            "FIELD_GET(IDR1_EVTQS, 0xffffffffULL) << 16",
            0x1f << IDR1_EVTQS_SHIFT,
        ),
        (
            "FIELD_GET(IDR1_PRIQS, 0xffffffffULL) << 11",
            0x1f << IDR1_PRIQS_SHIFT,
        ),
        (
            "FIELD_GET(IDR1_SSIDSIZE, 0xffffffffULL) << 6",
            0x1f << IDR1_SSIDSIZE_SHIFT,
        ),
        ("IDR1_SIDSIZE", 0x3f),
        ("STRTAB_BASE_RA", STRTAB_BASE_RA),
        ("STRTAB_BASE_ADDR_MASK", STRTAB_BASE_ADDR_MASK),
        (
            "STRTAB_BASE_CFG_FMT | STRTAB_BASE_CFG_SPLIT | STRTAB_BASE_CFG_LOG2SIZE",
            u64::from(STRTAB_BASE_CFG_MASK),
        ),
        ("Q_BASE_RWA", Q_BASE_RWA),
        ("Q_BASE_ADDR_MASK", Q_BASE_ADDR_MASK),
        ("Q_BASE_LOG2SIZE", Q_BASE_LOG2SIZE),
        ("MSI_CFG0_ADDR_MASK", MSI_CFG0_ADDR_MASK),
        ("CMDQ_CONS_ERR", u64::from(CMDQ_CONS_ERR)),
        ("CMDQ_ERR_CERROR_NONE_IDX", u64::from(CERROR_NONE)),
        ("CMDQ_ERR_CERROR_ILL_IDX", u64::from(CERROR_ILL)),
        ("CMDQ_ERR_CERROR_ABT_IDX", u64::from(CERROR_ABT)),
        ("STRTAB_STE_DWORDS * 8", 64),
        ("STRTAB_STE_0_V", 1),
        ("PRIQ_ENT_DWORDS * 8", 16),
        ("EVTQ_ENT_DWORDS * 8", 32),
        ("CMDQ_ENT_DWORDS * 8", 16),
    ];
    body.push_str("#define SZ_64K_PAGE1 0x10000ULL\n");
    for (i, (expr, v)) in regs.iter().enumerate() {
        // A 32-bit register's bit 31 is an `int` in C (`1 << 31`): compare as u32.
        let cast = if *v <= u64::from(u32::MAX) {
            "(u64)(u32)"
        } else {
            "(u64)"
        };
        let _ = writeln!(body, "  P(\"reg{i}\", {cast}({expr}));");
        expect.insert(format!("reg{i}"), vec![*v]);
    }
    body.push_str(
        "#ifdef STRTAB_STE_1_PPAR\n  P(\"ppar\", (u64)STRTAB_STE_1_PPAR);\n#else\n  P(\"ppar\", 0ULL);\n#endif\n",
    );
    // Linux 6.12 does not name PPAR: our STE bit 82 (dword 1 bit 18) is the spec's.
    expect.insert("ppar".into(), vec![0]);
    assert_eq!(STE_1_PPAR, 1 << (82 - 64));

    prog.push_str(&body);
    prog.push_str("  return 0;\n}\n");
    let got = parse(&linux_source::compile_and_run(
        "layout_linux_smmuv3",
        &prog,
        &["-std=gnu11", "-Wall", "-Wno-unused-function"],
    ));
    for (k, want) in &expect {
        let have = got.get(k).unwrap_or_else(|| panic!("{k}: not printed"));
        let label = if let Some(i) = k.strip_prefix("reg") {
            i.parse::<usize>()
                .map_or(k.clone(), |i| regs[i].0.to_string())
        } else {
            k.clone()
        };
        assert_eq!(have, want, "{label}: Linux {have:x?}, ours {want:x?}");
    }
    assert_eq!(got.len(), expect.len(), "every case compared");
}
